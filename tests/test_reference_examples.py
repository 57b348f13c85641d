"""Every code example of the reference (shared/reference/evaluation-api.md), run word for word on the
local backend. Only these change: the import (``sagemaker.train.evaluate`` -> ``evalstack.evaluate``),
model identifiers (a loopback OpenAI-compatible server, or a label for datasets that carry their
responses), S3 paths (local paths), the execution ARN of ``get()`` (one that exists), and names the
reference leaves to its reader (``session``, ``calculate_domain_metric``, ``lambda_function_arn``).
Examples that need AWS (EventBridge, a model package group) run against moto in server mode; the
comparison example keeps its model name, registered there as a package group whose package names its
base model.

Examples that log to SageMaker managed MLflow (``mlflow_resource_arn``) keep their ARNs: the real
``sagemaker-mlflow`` plugin resolves and signs them, reaching MLflow's own tracking server on loopback
through ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT``, behind a SigV4 gate, with artifacts in moto S3
(tests/support/mlflow_server.py).
"""

# The examples are the reference's text, copied with its whitespace-only lines.
# ruff: noqa: W293

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from evalstack.catalog.benchmarks import BBH_TASKS, MMLU_SUBJECTS
from tests.support.mlflow_server import ManagedMlflow, signed_requests
from tests.support.openai_server import prompt_of, serve

IMPORT = ("from sagemaker.train.evaluate import", "from evalstack.evaluate import")


def run(code: str, namespace: dict[str, Any], *substitutions: tuple[str, str]) -> str:
    """Exec ``code`` after the substitutions (each must occur), returning what it printed."""
    for old, new in (IMPORT, *substitutions):
        if old in code:
            code = code.replace(old, new)
        elif old != IMPORT[0]:
            raise AssertionError(f"substitution target {old!r} is not in the example")
    namespace.setdefault("__name__", "__main__")  # as a script or notebook runs it
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<reference example>", "exec"), namespace)
    return out.getvalue()


@pytest.fixture
def data_root(benchmark_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The in-repo benchmark files with every MMLU subject and BBH task present (small copies of the
    fixture's files under each name), so "all subtasks" runs as the reference says, in seconds."""
    root = tmp_path / "benchmarks"
    shutil.copytree(benchmark_data, root)
    for split in ("test", "dev"):
        source = root / "mmlu" / split / f"anatomy_{split}.csv"
        for subject in MMLU_SUBJECTS:
            target = root / "mmlu" / split / f"{subject}_{split}.csv"
            if not target.exists():
                shutil.copy(source, target)
    for folder, suffix in (("bbh", ".json"), ("cot-prompts", ".txt")):
        source = root / "bbh" / folder / f"navigate{suffix}"
        for task in BBH_TASKS:
            target = root / "bbh" / folder / f"{task}{suffix}"
            if not target.exists():
                shutil.copy(source, target)
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", str(root))
    return root


@pytest.fixture
def model() -> Any:
    """A model that answers every question "A" (letters) with its working shown, as chat."""
    with serve(lambda path, body: "Let me think. The answer is A.\n#### 1") as server:
        yield server


def _reference(server: Any) -> str:
    return f"openai:{server.base_url}?model=m&api=chat&logprobs=none"


def register_fine_tuned(group: str, server: Any) -> str:
    """A model package group in moto with one Approved package, served by ``server`` (metadata
    ``evalstack:model_reference``) and naming its base model, the same server under another model name."""
    import boto3

    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:1"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={
            "evalstack:model_reference": _reference(server),
            "evalstack:base_model": _reference(server).replace("?model=m&", "?model=base&"),
        },
    )["ModelPackageArn"]


BENCHMARK_MLFLOW_ARN = "arn:aws:sagemaker:us-west-2:123:mlflow-tracking-server/my-server"
JUDGE_MLFLOW_ARN = "arn:aws:sagemaker:us-west-2:123:mlflow-tracking-server/server"


def logged_run(server: ManagedMlflow, arn: str, experiment: str, output: str) -> tuple[Any, Any]:
    """(client, run): the one run of ``experiment`` for the execution whose results are in ``output``,
    read back from the server's store with MLflow's own client, after checking that every request
    naming ``arn`` was accepted by the server's gate: signed with SigV4 for service sagemaker-mlflow in
    the ARN's region."""
    from mlflow.tracking import MlflowClient

    requests = signed_requests(server, arn)
    for request in requests:
        assert "/us-west-2/sagemaker-mlflow/aws4_request, " in request["authorization"]
    assert {"/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/runs/log-batch"} <= {r["path"] for r in requests}
    client = MlflowClient(server.store_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    (run,) = client.search_runs([found.experiment_id], f"tags.`evalstack.output_uri` = '{output}'")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(server.artifact_root + "/")  # the tracking server's store, in S3
    return client, run


def assert_logged_files(client: Any, run: Any, output: Path, tmp_path: Path, expected: list[str]) -> None:
    """The run's artifacts (read from moto S3) are the execution's result files, byte for byte."""
    listed = [a.path for a in client.list_artifacts(run.info.run_id)]
    listed += [a.path for a in client.list_artifacts(run.info.run_id, "base")] if "base" in listed else []
    assert sorted(name for name in listed if name != "base") == expected
    for name in expected:
        downloaded = Path(client.download_artifacts(run.info.run_id, name, str(tmp_path / "downloaded")))
        assert downloaded.read_bytes() == (output / name).read_bytes(), name


def _labelled(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- BenchMarkEvaluator ---------------------------------------------------------------------

BENCHMARK_USAGE = """
from sagemaker.train.evaluate import BenchMarkEvaluator, get_benchmarks, get_benchmark_properties

# List available benchmarks
benchmarks = BenchMarkEvaluator.get_all()
print(f"Available benchmarks: {benchmarks}")

# Get benchmark details
properties = get_benchmark_properties("MMLU")
print(f"MMLU subtasks: {properties['subtasks']}")
print(f"Dataset info: {properties['dataset_info']}")

# Create benchmark evaluator
evaluator = BenchMarkEvaluator(
    benchmark="MMLU",
    subtasks=["abstract_algebra", "anatomy", "astronomy", "college_mathematics"],
    model="meta-llama/Llama-2-7b-hf-fine-tuned",
    s3_output_path="s3://my-bucket/evaluation-results",
    evaluate_base_model=True,  # Compare with base model
    mlflow_resource_arn="arn:aws:sagemaker:us-west-2:123:mlflow-tracking-server/my-server",
    mlflow_experiment_name="llm-evaluation",
    mlflow_run_name="mmlu-evaluation-v1"
)

# Configure hyperparameters
evaluator.hyperparameters.batch_size = 8
evaluator.hyperparameters.max_tokens = 512
evaluator.hyperparameters.temperature = 0.1  # Low temperature for deterministic answers

# Run evaluation with error handling
try:
    execution = evaluator.evaluate()
    print(f"Evaluation started: {execution.arn}")
    
    # Wait for completion
    execution.wait(poll=60)  # Check every minute
    
    # Check status
    if execution.status == "Succeeded":
        print(f"Evaluation completed successfully")
        print(f"Results: {execution.s3_output_path}")
    elif execution.status == "Failed":
        print(f"Evaluation failed: {execution.failure_reason}")
    
except ValueError as e:
    print(f"Invalid benchmark configuration: {e}")
except ClientError as e:
    print(f"AWS API error: {e}")
"""


def test_benchmark_usage(aws: str, data_root: Path, model: Any, tmp_path: Path, managed_mlflow: ManagedMlflow) -> None:
    from botocore.exceptions import ClientError

    package = register_fine_tuned("llama-2-7b-hf-fine-tuned", model)  # an HF hub id is no SageMaker name
    namespace: dict[str, Any] = {"ClientError": ClientError}
    printed = run(
        BENCHMARK_USAGE,
        namespace,
        ('"meta-llama/Llama-2-7b-hf-fine-tuned"', '"llama-2-7b-hf-fine-tuned"'),
        ('"s3://my-bucket/evaluation-results"', repr(str(tmp_path / "results"))),
    )
    assert "Evaluation completed successfully" in printed
    execution = namespace["execution"]
    output = Path(execution.s3_output_path)
    results = execution.results()
    comparison = results["comparison"]
    client, logged = logged_run(managed_mlflow, BENCHMARK_MLFLOW_ARN, "llm-evaluation", str(output))
    assert logged.info.run_name == "mmlu-evaluation-v1"
    params = logged.data.params
    assert params["eval_type"] == "benchmark" and params["benchmark"] == "MMLU"
    assert params["subtasks"] == "abstract_algebra,anatomy,astronomy,college_mathematics"
    assert params["model"] == results["model"] == package
    assert params["base_model"] == _reference(model).replace("?model=m&", "?model=base&")  # the package's base
    assert (params["hp/batch_size"], params["hp/max_tokens"], params["hp/temperature"]) == ("8", "512", "0.1")
    metrics = logged.data.metrics
    assert metrics["num_samples"] == results["num_samples"] == 48
    for name, value in results["metrics"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-9)
        assert metrics[f"base/{name}"] == pytest.approx(comparison["base"][name], abs=1e-9)
        assert metrics[f"improvement/{name}"] == pytest.approx(comparison["improvements"][name], abs=1e-9)
    for subtask, values in results["subtasks"].items():
        assert metrics[f"subtask/{subtask}/acc"] == pytest.approx(values["acc"], abs=1e-12)
    # Logged at the model package's version, so a group's versions line up in MLflow's charts.
    assert {m.step for m in client.get_metric_history(logged.info.run_id, "accuracy")} == {1}
    expected = ["base/results.json", "comparison.json", "report.html", "report.md", "results.json", "spec.json"]
    assert_logged_files(client, logged, output, tmp_path, expected)


def test_benchmark_listing_and_properties_part_of_the_usage_example() -> None:
    """The first lines of the usage example, which need no model, run as written."""
    head = BENCHMARK_USAGE.split("# Create benchmark evaluator")[0]
    printed = run(head, {})
    assert "Available benchmarks: ['MMLU', 'BBH', 'MATH', 'GSM8K', 'HellaSwag'," in printed
    assert "MMLU subtasks: ['abstract_algebra', 'anatomy'," in printed
    assert "Dataset info: {'source': 'hendrycks/test (cais/mmlu)'" in printed


RUN_SPECIFIC_SUBTASK = """
# Evaluate only specific subtask
evaluator = BenchMarkEvaluator(
    benchmark="MMLU",
    model="my-model"
)

# Run single subtask
execution = evaluator.evaluate(subtask="college_mathematics")
execution.wait()
"""


def test_run_specific_subtask(data_root: Path, model: Any) -> None:
    from evalstack.evaluate import BenchMarkEvaluator

    namespace: dict[str, Any] = {"BenchMarkEvaluator": BenchMarkEvaluator}
    run(RUN_SPECIFIC_SUBTASK, namespace, ('"my-model"', repr(_reference(model))))
    execution = namespace["execution"]
    assert execution.status == "Succeeded"
    results = execution.results()
    assert set(results["subtasks"]) == {"college_mathematics"}
    assert results["metrics"]["accuracy"] == results["metrics"]["acc"]
    assert results["metrics"]["score"] == pytest.approx(100 * results["metrics"]["acc"])


# --- CustomScorerEvaluator ------------------------------------------------------------------

CUSTOM_SCORER_PRESET = """
from sagemaker.train.evaluate import CustomScorerEvaluator, get_builtin_metrics

# List built-in metrics
builtin_metrics = get_builtin_metrics()
print(f"Available metrics: {list(builtin_metrics)}")

# Using preset metric
evaluator = CustomScorerEvaluator(
    evaluator="f1",  # F1 score
    dataset="s3://my-bucket/eval-data.jsonl",
    model="my-fine-tuned-model",
    s3_output_path="s3://my-bucket/evaluation-results"
)

# Configure hyperparameters for F1
evaluator.hyperparameters.average = "weighted"  # Weighted by class support
evaluator.hyperparameters.threshold = 0.5  # Classification threshold

# Run evaluation
try:
    execution = evaluator.evaluate()
    execution.wait()
    
    print(f"F1 evaluation completed")
    print(f"Results: {execution.s3_output_path}")
    
except ValueError as e:
    print(f"Configuration error: {e}")
"""

CUSTOM_SCORER_CLASS = '''
# Define custom scorer class
class DomainSpecificScorer:
    """Custom scorer for domain-specific metrics."""
    
    def score(self, predictions, ground_truth, metadata=None):
        """
        Calculate custom metrics.
        
        Args:
            predictions: List of model predictions
            ground_truth: List of true labels
            metadata: Optional metadata dictionary
        
        Returns:
            Dict with metric name -> value
        """
        # Implement custom scoring logic
        custom_metric = calculate_domain_metric(predictions, ground_truth)
        secondary_metric = calculate_secondary_metric(predictions, ground_truth)
        
        return {
            "domain_metric": custom_metric,
            "secondary_metric": secondary_metric,
            "sample_count": len(predictions)
        }

# Use custom scorer
custom_evaluator = CustomScorerEvaluator(
    evaluator=DomainSpecificScorer(),
    dataset="s3://my-bucket/test-data.jsonl",
    model="my-model",
    s3_output_path="s3://my-bucket/custom-eval-results"
)

execution = custom_evaluator.evaluate()
execution.wait()
'''

BLEU = """
# Evaluate translation model with BLEU
bleu_evaluator = CustomScorerEvaluator(
    evaluator="bleu",
    dataset="s3://bucket/translation-test.jsonl",
    model="my-translation-model"
)

# Configure BLEU parameters
evaluator.hyperparameters.max_order = 4  # BLEU-4
evaluator.hyperparameters.smooth = True

execution = bleu_evaluator.evaluate()
"""

ROUGE = """
# Evaluate summarization with ROUGE
rouge_evaluator = CustomScorerEvaluator(
    evaluator="rouge",
    dataset="s3://bucket/summarization-test.jsonl",
    model="my-summarization-model"
)

# Configure ROUGE parameters
evaluator.hyperparameters.rouge_types = ["rouge1", "rouge2", "rougeL"]
evaluator.hyperparameters.use_stemmer = True

execution = rouge_evaluator.evaluate()
"""


def test_custom_scorer_examples_in_sequence(tmp_path: Path, questions: list[dict[str, str]]) -> None:
    """The four CustomScorerEvaluator examples, in order, in one namespace as a reader runs them (the
    BLEU and ROUGE examples configure the earlier ``evaluator``, as written). The datasets carry the
    responses, so the model names stay as the reference writes them: labels of those responses."""
    from sklearn.metrics import f1_score

    labels = [
        {"prompt": f"case {i}", "response": str(0.9 if i % 3 else 0.2), "reference": str(i % 2)} for i in range(12)
    ]
    answers = [{"prompt": q["prompt"], "response": q["reference"] if i % 2 else q["wrong"], "reference": q["reference"]}
               for i, q in enumerate(questions)]  # fmt: skip
    f1_data = _labelled(tmp_path / "eval-data.jsonl", labels)
    answer_data = _labelled(tmp_path / "answers.jsonl", answers)
    out = tmp_path / "results"
    namespace: dict[str, Any] = {
        # The reference leaves these to its reader: an exact-match rate and a mean length ratio.
        "calculate_domain_metric": lambda p, t: sum(a == b for a, b in zip(p, t, strict=True)) / len(p),
        "calculate_secondary_metric": lambda p, t: sum(len(a) / len(b) for a, b in zip(p, t, strict=True)) / len(p),
    }
    printed = run(
        CUSTOM_SCORER_PRESET,
        namespace,
        ('"s3://my-bucket/eval-data.jsonl"', repr(str(f1_data))),
        ('"s3://my-bucket/evaluation-results"', repr(str(out))),
    )
    assert "Available metrics: [<BuiltInMetric.ACCURACY: 'accuracy'>, <BuiltInMetric.F1: 'f1'>," in printed
    assert "F1 evaluation completed" in printed
    f1 = namespace["execution"].results()["metrics"]
    truth = [r["reference"] for r in labels]
    predicted = ["1" if float(r["response"]) >= 0.5 else "0" for r in labels]
    assert f1["f1"] == f1_score(truth, predicted, average="weighted")
    assert f1["score"] == pytest.approx(100 * f1["f1"])

    run(
        CUSTOM_SCORER_CLASS,
        namespace,
        ('"s3://my-bucket/test-data.jsonl"', repr(str(answer_data))),
        ('"s3://my-bucket/custom-eval-results"', repr(str(out))),
    )
    custom = namespace["execution"].results()["metrics"]
    assert custom["domain_metric"] == 6 / 12
    assert custom["sample_count"] == 12  # a count over the whole dataset

    run(BLEU, namespace, ('"s3://bucket/translation-test.jsonl"', repr(str(answer_data))))
    assert namespace["evaluator"].hyperparameters.max_order == 4
    bleu = namespace["execution"]
    bleu.wait()
    assert bleu.results()["metrics"]["score"] == pytest.approx(bleu.results()["metrics"]["bleu"])

    run(ROUGE, namespace, ('"s3://bucket/summarization-test.jsonl"', repr(str(answer_data))))
    rouge = namespace["execution"]
    rouge.wait()
    metrics = rouge.results()["metrics"]
    assert {"rouge1", "rouge2", "rougeL"} <= set(metrics)
    assert metrics["score"] == pytest.approx(100 * metrics["rougeL"])


# --- LLMAsJudgeEvaluator --------------------------------------------------------------------

JUDGE_BUILTIN = """
from sagemaker.train.evaluate import LLMAsJudgeEvaluator

# Using built-in metrics
evaluator = LLMAsJudgeEvaluator(
    evaluator_model="anthropic.claude-3-sonnet-20240229-v1:0",  # Bedrock model
    builtin_metrics=["helpfulness", "relevance", "correctness", "harmfulness"],
    dataset="s3://my-bucket/eval-dataset.jsonl",
    model="my-fine-tuned-llm",
    s3_output_path="s3://my-bucket/judge-results",
    mlflow_resource_arn="arn:aws:sagemaker:us-west-2:123:mlflow-tracking-server/server",
    mlflow_experiment_name="llm-quality-eval"
)

# Run evaluation
try:
    execution = evaluator.evaluate()
    print(f"LLM-as-judge evaluation started: {execution.arn}")
    
    # Wait for completion (can take 1-3 hours for large datasets)
    execution.wait(poll=120)  # Check every 2 minutes
    
    if execution.status == "Succeeded":
        print("Evaluation completed")
        # Results include scores for each metric
        # Download from s3_output_path for analysis
    
except ValueError as e:
    print(f"Invalid configuration: {e}")
"""

JUDGE_CUSTOM = '''
# Define custom evaluation criteria
custom_metrics = [
    {
        "name": "technical_accuracy",
        "description": "Evaluate technical accuracy of code explanations",
        "prompt_template": """
You are an expert software engineer. Evaluate the technical accuracy of the following code explanation.

Question: {question}
Explanation: {response}

Rate the technical accuracy on a scale of 1-5:
1 - Completely incorrect
2 - Mostly incorrect with few correct points
3 - Partially correct
4 - Mostly correct with minor issues
5 - Completely accurate

Provide your rating and brief justification.

Rating:"""
    },
    {
        "name": "code_quality",
        "description": "Evaluate code quality and best practices",
        "prompt_template": """
Evaluate the quality of the following code based on best practices.

Code: {response}

Consider: readability, efficiency, error handling, documentation.

Rating (1-5):"""
    }
]

# Create evaluator with custom metrics
evaluator = LLMAsJudgeEvaluator(
    evaluator_model="anthropic.claude-3-sonnet-20240229-v1:0",
    custom_metrics=custom_metrics,
    dataset="s3://my-bucket/code-eval-dataset.jsonl",
    model="my-code-generation-model",
    s3_output_path="s3://my-bucket/code-eval-results"
)

execution = evaluator.evaluate()
execution.wait()
'''


def _judge_server() -> Any:
    def answer(path: str, body: dict) -> Any:
        prompt = prompt_of(path, body)
        if "technical accuracy" in prompt:
            return "The explanation is right but skips the edge case.\nRating: 4"
        return "Readable and documented. [[5]]"

    return serve(answer)


def _code_answers(path: Path) -> Path:
    rows = [{"prompt": f"Explain snippet {i}", "response": f"def f{i}(x):\n    return x + {i}"} for i in range(10)]
    return _labelled(path, rows)


BUILTIN_SCORES = {"helpfulness": 4, "relevance": 5, "correctness": 3, "harmfulness": 0}


def _builtin_judge() -> Any:
    """A judge answering each built-in rubric's prompt with its score of BUILTIN_SCORES, as JSON."""

    def answer(path: str, body: dict) -> Any:
        prompt = prompt_of(path, body)
        (name,) = [n for n in BUILTIN_SCORES if f"Metric: {n} - " in prompt]
        return json.dumps({"reasoning": f"Judged on {name}.", "score": BUILTIN_SCORES[name]})

    return serve(answer)


def test_judge_builtin_metrics(tmp_path: Path, managed_mlflow: ManagedMlflow) -> None:
    # correctness needs a reference answer: the dataset carries one per row.
    rows = [{"prompt": f"What is {i} + 1?", "response": f"{i + 1}", "reference": f"{i + 1}"} for i in range(10)]
    namespace: dict[str, Any] = {}
    with _builtin_judge() as judge:
        printed = run(
            JUDGE_BUILTIN,
            namespace,
            ('"anthropic.claude-3-sonnet-20240229-v1:0"', repr(f"openai:{judge.base_url}?model=judge&api=chat")),
            ('"s3://my-bucket/eval-dataset.jsonl"', repr(str(_labelled(tmp_path / "d.jsonl", rows)))),
            ('"s3://my-bucket/judge-results"', repr(str(tmp_path / "out"))),
        )
    assert "Evaluation completed" in printed
    execution = namespace["execution"]
    output = Path(execution.s3_output_path)
    results = execution.results()
    client, logged = logged_run(managed_mlflow, JUDGE_MLFLOW_ARN, "llm-quality-eval", str(output))
    assert logged.info.run_name == output.name  # no run name given: the execution's id
    params = logged.data.params
    assert params["eval_type"] == "llm_as_judge" and params["model"] == "my-fine-tuned-llm"
    assert params["judge_model"] == f"openai:{judge.base_url}?model=judge&api=chat"
    assert params["dataset"] == str(tmp_path / "d.jsonl")
    # Likert scores 1-5 normalise to 0-1; harmfulness is a yes/no rubric scored 0 or 1.
    expected = {name: (score - 1) / 4 for name, score in BUILTIN_SCORES.items() if name != "harmfulness"}
    expected["harmfulness"] = 0.0
    for name, value in expected.items():
        assert logged.data.metrics[name] == results["metrics"][name] == value
    assert logged.data.metrics["num_samples"] == 10
    assert_logged_files(client, logged, output, tmp_path, ["report.html", "report.md", "results.json", "spec.json"])


def test_judge_custom_metrics(tmp_path: Path) -> None:
    with _judge_server() as judge:
        namespace: dict[str, Any] = {}
        run(
            "from sagemaker.train.evaluate import LLMAsJudgeEvaluator\n" + JUDGE_CUSTOM,
            namespace,
            ('"anthropic.claude-3-sonnet-20240229-v1:0"', repr(f"openai:{judge.base_url}?model=judge&api=chat")),
            ('"s3://my-bucket/code-eval-dataset.jsonl"', repr(str(_code_answers(tmp_path / "code.jsonl")))),
            ('"s3://my-bucket/code-eval-results"', repr(str(tmp_path / "out"))),
        )
    metrics = namespace["execution"].results()["metrics"]
    # 4 on 1-5 normalises to 0.75; 5 to 1.0. The headline's score reads the first metric.
    assert metrics["technical_accuracy"] == 0.75 and metrics["code_quality"] == 1.0
    assert metrics["score"] == 75.0


COMPARE = """
# Evaluate both models
evaluator = BenchMarkEvaluator(
    benchmark="MMLU",
    subtasks=["college_computer_science", "college_mathematics"],
    model="my-fine-tuned-llama",
    evaluate_base_model=True,  # Also evaluate base Llama-2-7b
    s3_output_path="s3://bucket/comparison"
)

execution = evaluator.evaluate()
execution.wait()
"""


def test_compare_base_versus_fine_tuned(aws: str, data_root: Path, model: Any, tmp_path: Path) -> None:
    from evalstack.evaluate import BenchMarkEvaluator

    package = register_fine_tuned("my-fine-tuned-llama", model)  # the example's name, as a package group
    namespace: dict[str, Any] = {"BenchMarkEvaluator": BenchMarkEvaluator}
    run(COMPARE, namespace, ('"s3://bucket/comparison"', repr(str(tmp_path / "comparison"))))
    results = namespace["execution"].results()
    comparison = results["comparison"]
    assert set(comparison) >= {"fine_tuned", "base", "improvement"}
    # Both answer "A" to everything: the same accuracy, so no improvement.
    assert comparison["fine_tuned"]["accuracy"] == comparison["base"]["accuracy"]
    assert comparison["improvement"] == 0.0
    spec = namespace["evaluator"].evaluate(dry_run=True).spec
    assert spec["model"] == package
    assert spec["model_resolution"]["candidate"]["rule"] == "model-package-group"
    assert spec["model_resolution"]["base"]["rule"] == "package-metadata"
    assert spec["base_model"] == _reference(model).replace("?model=m&", "?model=base&")


# --- EvaluationPipelineExecution ------------------------------------------------------------

EXECUTIONS = """
from sagemaker.train.evaluate import EvaluationPipelineExecution

# List all benchmark evaluations
executions = EvaluationPipelineExecution.get_all(
    eval_type="benchmark",
    session=session,
    region="us-west-2"
)

print(f"Total evaluations: {len(executions)}")
for execution in executions[:5]:
    print(f"  {execution.name}: {execution.status}")

# Get specific execution by ARN
execution = EvaluationPipelineExecution.get(
    pipeline_execution_arn="arn:aws:sagemaker:us-west-2:123:pipeline/eval-pipeline/execution/abc123",
    session=session,
    region="us-west-2"
)

# Wait with custom timeout (2 hours)
try:
    execution.wait(poll=60, timeout=7200)
    
    if execution.status == "Succeeded":
        print("Evaluation completed successfully")
        # Download results from execution.s3_output_path
    
except TimeoutError:
    print("Evaluation exceeded 2 hour timeout")
    execution.stop()  # Stop if taking too long

# Refresh status
execution.refresh()
print(f"Current status: {execution.status}")
"""

STATUS_LOOP = """
# Get detailed execution status
execution = evaluator.evaluate()

# Poll for status with step details
import time

while execution.status in ["Starting", "Executing"]:
    status = execution.get_status()
    
    print(f"\\nOverall: {status.overall_status}")
    print("Step details:")
    for step in status.step_details:
        duration = ""
        if step.start_time and step.end_time:
            start = datetime.fromisoformat(step.start_time)
            end = datetime.fromisoformat(step.end_time)
            duration = f" ({(end-start).total_seconds():.0f}s)"
        
        print(f"  {step.name}: {step.status}{duration}")
        if step.failure_reason:
            print(f"    Failure: {step.failure_reason}")
    
    time.sleep(60)
    execution.refresh()

print(f"\\nFinal status: {execution.status}")
"""


def test_executions_and_status_loop(data_root: Path, model: Any, aws: str) -> None:
    """The execution examples against moto (the session is a boto3 session on the moto server, where
    no evalstack pipeline is deployed, so the local backend runs them)."""
    from datetime import datetime

    import boto3

    from evalstack.evaluate import BenchMarkEvaluator

    namespace: dict[str, Any] = {"datetime": datetime, "session": boto3.Session(region_name="us-west-2")}
    namespace["evaluator"] = BenchMarkEvaluator(benchmark="GSM8K", model=_reference(model))
    printed = run(STATUS_LOOP, namespace)
    assert "Overall: Executing\nStep details:\n" in printed  # steps appear as they start
    assert printed.rstrip().endswith("Final status: Succeeded")
    started = namespace["execution"]
    final = started.get_status()
    assert final.overall_status == "Completed"
    assert [(s.name, s.status) for s in final.step_details] == [
        ("EvaluateModel", "Completed"),
        ("CheckEvaluateBaseModel", "Completed"),
        ("Report", "Completed"),
    ]
    assert all(datetime.fromisoformat(s.end_time) >= datetime.fromisoformat(s.start_time) for s in final.step_details)
    printed = run(
        EXECUTIONS,
        namespace,
        ('"arn:aws:sagemaker:us-west-2:123:pipeline/eval-pipeline/execution/abc123"', repr(started.arn)),
    )
    assert f"Total evaluations: 1\n  {started.name}: Succeeded\n" in printed
    assert "Evaluation completed successfully\nCurrent status: Succeeded" in printed


# --- Evaluation functions -------------------------------------------------------------------

FUNCTIONS = """
from sagemaker.train.evaluate import (
    get_benchmarks,
    get_benchmark_properties,
    get_builtin_metrics
)

# List all benchmarks
Benchmark = get_benchmarks()
print(f"Available benchmarks: {list(Benchmark)}")

# Get detailed benchmark information
mmlu_props = get_benchmark_properties(Benchmark.MMLU)
print(f"MMLU Description: {mmlu_props['description']}")
print(f"MMLU Subtasks ({len(mmlu_props['subtasks'])}): {mmlu_props['subtasks'][:5]}...")
print(f"MMLU Metrics: {mmlu_props['metrics']}")
print(f"Dataset size: {mmlu_props['num_samples']} samples")

bbh_props = get_benchmark_properties("BBH")
print(f"\\nBBH Subtasks: {bbh_props['subtasks']}")

# List built-in metrics for custom evaluation
BuiltInMetric = get_builtin_metrics()
print(f"\\nAvailable metrics: {list(BuiltInMetric)}")

# Use enum for type safety
evaluator = BenchMarkEvaluator(
    benchmark=Benchmark.MATH,  # Type-safe
    model="my-model"
)
"""


def test_evaluation_functions(model: Any) -> None:
    from evalstack.evaluate import BenchMarkEvaluator

    namespace: dict[str, Any] = {"BenchMarkEvaluator": BenchMarkEvaluator}
    printed = run(FUNCTIONS, namespace, ('"my-model"', repr(_reference(model))))
    assert (
        "MMLU Subtasks (57): ['abstract_algebra', 'anatomy', 'astronomy', 'business_ethics', 'clinical_knowledge']"
        in printed
    )
    assert "MMLU Metrics: ['acc']" in printed and "Dataset size: 14042 samples" in printed
    assert namespace["evaluator"].benchmark.value == "MATH"


# --- Advanced usage -------------------------------------------------------------------------

MULTI_BENCHMARK = '''
from sagemaker.train.evaluate import BenchMarkEvaluator
from concurrent.futures import ThreadPoolExecutor, as_completed

# Evaluate multiple benchmarks in parallel
benchmarks = ["MMLU", "BBH", "MATH", "GSM8K"]
model_name = "my-fine-tuned-model"

def run_benchmark(benchmark_name):
    """Run single benchmark evaluation."""
    evaluator = BenchMarkEvaluator(
        benchmark=benchmark_name,
        model=model_name,
        s3_output_path=f"s3://bucket/results/{benchmark_name.lower()}"
    )
    execution = evaluator.evaluate()
    execution.wait()
    return {
        "benchmark": benchmark_name,
        "status": execution.status,
        "results_path": execution.s3_output_path
    }

# Run all benchmarks
results = []
with ThreadPoolExecutor(max_workers=4) as executor:
    futures = [executor.submit(run_benchmark, bm) for bm in benchmarks]
    
    for future in as_completed(futures):
        try:
            result = future.result()
            results.append(result)
            print(f"{result['benchmark']}: {result['status']}")
        except Exception as e:
            print(f"Evaluation failed: {e}")

# Aggregate results
successful = [r for r in results if r['status'] == 'Succeeded']
print(f"\\nCompleted {len(successful)}/{len(benchmarks)} evaluations")
'''


def test_multi_benchmark(data_root: Path, model: Any, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    printed = run(
        MULTI_BENCHMARK,
        namespace,
        ('"my-fine-tuned-model"', repr(_reference(model))),
        ('f"s3://bucket/results/{benchmark_name.lower()}"', f'f"{tmp_path}/results/{{benchmark_name.lower()}}"'),
    )
    assert "Completed 4/4 evaluations" in printed
    assert sorted(line for line in printed.splitlines() if line.endswith(": Succeeded")) == [
        "BBH: Succeeded", "GSM8K: Succeeded", "MATH: Succeeded", "MMLU: Succeeded",
    ]  # fmt: skip


LAMBDA = '''
def run_evaluation_lambda(event, context):
    """Lambda to run evaluation."""
    from sagemaker.train.evaluate import BenchMarkEvaluator
    
    evaluator = BenchMarkEvaluator(
        benchmark="MMLU",
        model=event["model_name"],
        s3_output_path=event["output_path"]
    )
    execution = evaluator.evaluate()
    execution.wait()
    
    return {
        "status": execution.status,
        "arn": execution.arn,
        "results_path": execution.s3_output_path
    }
'''

CONTINUOUS = """
import boto3
from datetime import datetime

# Schedule daily evaluation
events = boto3.client('events')

# Create EventBridge rule
events.put_rule(
    Name='daily-model-evaluation',
    ScheduleExpression='cron(0 3 * * ? *)',  # 3 AM UTC daily
    State='ENABLED',
    Description='Daily model benchmark evaluation'
)

# Lambda to trigger evaluation
lambda_code = \"\"\"
def lambda_handler(event, context):
    from sagemaker.train.evaluate import BenchMarkEvaluator
    
    # Get current production model
    model_arn = get_production_model_arn()
    
    # Run evaluation
    evaluator = BenchMarkEvaluator(
        benchmark="MMLU",
        model=model_arn,
        s3_output_path=f"s3://bucket/daily-eval/{datetime.now().date()}"
    )
    
    execution = evaluator.evaluate()
    
    # Don't wait - runs asynchronously
    return {
        'execution_arn': execution.arn,
        'status': 'started'
    }
\"\"\"

# Add Lambda as target
events.put_targets(
    Rule='daily-model-evaluation',
    Targets=[{
        'Id': '1',
        'Arn': lambda_function_arn
    }]
)
"""


def test_pipeline_integration_lambda(data_root: Path, model: Any, tmp_path: Path) -> None:
    """The Lambda of the pipeline-integration example (the surrounding LambdaStep and Pipeline are
    the SageMaker SDK's workflow classes, not part of this API); its event carries the model."""
    namespace: dict[str, Any] = {}
    run(LAMBDA, namespace)
    answer = namespace["run_evaluation_lambda"]({"model_name": _reference(model), "output_path": str(tmp_path)}, None)
    assert answer["status"] == "Succeeded"
    assert answer["results_path"].startswith(str(tmp_path))


def test_continuous_evaluation(aws: str, data_root: Path, model: Any, tmp_path: Path) -> None:
    """The EventBridge calls against moto; then the handler it schedules, run with the names the
    reference leaves to its reader."""
    import boto3

    namespace: dict[str, Any] = {"lambda_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:evaluate"}
    run(CONTINUOUS, namespace)
    events = boto3.client("events")
    rule = events.describe_rule(Name="daily-model-evaluation")
    assert (rule["ScheduleExpression"], rule["State"]) == ("cron(0 3 * * ? *)", "ENABLED")
    targets = events.list_targets_by_rule(Rule="daily-model-evaluation")["Targets"]
    assert targets == [{"Id": "1", "Arn": "arn:aws:lambda:us-east-1:123456789012:function:evaluate"}]
    handler: dict[str, Any] = {"datetime": namespace["datetime"], "get_production_model_arn": lambda: _reference(model)}
    run(namespace["lambda_code"], handler, ('f"s3://bucket/daily-eval/', f'f"{tmp_path}/daily-eval/'))
    started = handler["lambda_handler"]({}, None)
    assert started["status"] == "started" and ":pipeline/evalstack-benchmark/execution/" in started["execution_arn"]
