"""Every default of the evalstack constructs, in one place (docs/deploy.md lists them).

The constructs' keyword props default to these values; ``EvaluationPlatform`` forwards each of them.
Values the pipeline definition also needs live in :mod:`evalstack.pipeline.definition` (a lower layer)
and are re-exported here so there is still one place to read them.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_logs as logs

from evalstack.catalog.limits import MAX_CONCURRENT_EVALUATIONS
from evalstack.pipeline.definition import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_MAX_RUNTIME_SECONDS,
    DEFAULT_REPORT_INSTANCE_TYPE,
    DEFAULT_VOLUME_SIZE_GB,
)

# Names. The stage names the pipelines (``<name_prefix>-<kind>``), SSM parameters and log groups.
STAGE = "dev"
NAME_PREFIX_TEMPLATE = "evalstack-{stage}"
# Every log group of a platform is named under this root, so the key's Logs statement names only them.
LOG_GROUP_ROOT = "/evalstack"

# Bucket layout.
DATASET_PREFIX = "datasets/"
OUTPUT_PREFIX = "evaluations/"
# Specs and markers the trigger writes; only the trigger role may write here (the gate trusts it).
CONTROL_PREFIX = "control/"
NONCURRENT_VERSION_EXPIRATION = Duration.days(90)
ACCESS_LOG_EXPIRATION = Duration.days(365)
# Deleting the key or bucket makes every result unreadable: both are retained unless told otherwise.
REMOVAL_POLICY = RemovalPolicy.RETAIN
KEY_PENDING_WINDOW = Duration.days(30)

# Processing jobs. The evaluation steps run on INSTANCE_TYPE (GPU types are fine), the Report steps
# (merge shards, compare, write the report) on a small CPU type.
INSTANCE_TYPE = DEFAULT_INSTANCE_TYPE
REPORT_INSTANCE_TYPE = DEFAULT_REPORT_INSTANCE_TYPE
INSTANCE_COUNT = 1
VOLUME_SIZE_GB = DEFAULT_VOLUME_SIZE_GB
MAX_RUNTIME_SECONDS = DEFAULT_MAX_RUNTIME_SECONDS
MAX_PARALLEL_STEPS = 4

# JumpStart: the regional content bucket (manifest, specs, public artifacts) and the gated-model bucket,
# as evalstack/models/jumpstart.py reads them (a lower layer may not be imported; a test keeps them equal).
JUMPSTART_BUCKETS = ("jumpstart-cache-prod-{region}", "jumpstart-private-cache-prod-{region}")
JUMPSTART_MANIFEST_KEY = "models_manifest.json"

# Network.
VPC_CIDR = "10.60.0.0/16"
MAX_AZS = 2
LOG_RETENTION = logs.RetentionDays.ONE_YEAR

# Continuous evaluation and the approval gate.
SCHEDULE = "rate(1 day)"
SCHEDULE_TIMEZONE = "UTC"
# Never re-gate a decision a person made: only pending packages are evaluated and gated.
CANDIDATE_STATUSES = ("PendingManualApproval",)
GATED_STATUSES = ("PendingManualApproval",)
MAX_CONCURRENT = MAX_CONCURRENT_EVALUATIONS
# The trigger re-queues an evaluation refused at the concurrency limit with this first delay; it
# doubles per attempt up to SQS's 900 s.
RETRY_DELAY = Duration.minutes(2)
# Receives of one retry message whose handling keeps failing before it moves to the trigger's DLQ.
# (A refusal at the limit is no failure: the trigger sends a new delayed message and deletes this one.)
RETRY_MAX_RECEIVES = 5
# One gate at a time: check-then-act on a package is not raced by a second decision.
GATE_RESERVED_CONCURRENCY = 1
TRIGGER_RESERVED_CONCURRENCY = 2

# Lambda functions.
FUNCTION_MEMORY_MB = 256
FUNCTION_RETRY_ATTEMPTS = 2
DLQ_RETENTION = Duration.days(14)

# Alarms: any message in a dead-letter queue, any function error, any failed evaluation.
ALARM_PERIOD = Duration.minutes(5)

# Stack outputs (the SSM parameters are always written: the runtime client reads them).
CREATE_OUTPUTS = True
