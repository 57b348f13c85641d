"""Service limits from the reference API, enforced locally and on AWS alike."""

MAX_CONCURRENT_EVALUATIONS = 10
MAX_DATASET_BYTES = 10 * 1024**3
MIN_DATASET_SAMPLES = 10
MAX_CUSTOM_METRICS = 10
MAX_PROMPT_TEMPLATE_BYTES = 10 * 1024
MAX_JUDGE_PROMPTS = 10_000
BATCH_SIZE_RANGE = (1, 32)
# SageMaker caps pipeline parameter values at 1,024 characters, so specs travel as files.
MAX_PIPELINE_PARAMETER_CHARS = 1024
# A Processing job runs on at most 100 instances (ProcessingResources.ClusterConfig.InstanceCount).
MAX_INSTANCE_COUNT = 100
