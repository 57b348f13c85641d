"""The execution API on the embedded local backend, end to end: evaluators start real pipeline
executions (detached runner, subprocess steps) against a loopback model server and TruthfulQA
questions from shared/benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path

import pytest
import sacrebleu
from botocore.exceptions import ClientError

from evalstack import storage
from evalstack.evaluate import CustomScorerEvaluator, EvaluationPipelineExecution
from evalstack.pipeline.definition import definition_json
from evalstack.runtime.backend import resolve_backend
from evalstack.runtime.execution import ConcurrencyLimitError
from tests.conftest import BASE_CORRECT, EXAMPLES, REPO_ROOT, TRUTHFULQA_QUESTIONS, scripted_answers
from tests.support.openai_server import serve

N_QUESTIONS = TRUTHFULQA_QUESTIONS


@pytest.fixture
def slow_model_server(questions: list[dict[str, str]]) -> Iterator:
    with serve(scripted_answers(questions, 2.0, 2.0)) as server:
        yield server


def _evaluator(server, dataset: str, output: str, **kwargs) -> CustomScorerEvaluator:
    evaluator = CustomScorerEvaluator(
        evaluator="accuracy",
        dataset=dataset,
        model=f"openai:{server.base_url}?model=candidate&api=chat",
        base_model=f"openai:{server.base_url}?model=base&api=chat",
        s3_output_path=output,
        **kwargs,
    )
    evaluator.hyperparameters.max_concurrency = 1
    return evaluator


def _cli(*args: str) -> str:
    """The evalstack command in a new process: a client restart, sharing only EVALSTACK_HOME."""
    done = subprocess.run(
        [sys.executable, "-m", "evalstack.cli.main", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_execution_api_with_base_model(model_server, dataset: str) -> None:
    output = "s3://evalstack-runtime/evals"
    execution = _evaluator(model_server, dataset, output, evaluate_base_model=True, base_eval_name="tqa run").evaluate()
    assert execution.name.startswith("tqa-run-")
    assert execution.eval_type == "custom_scorer"
    assert execution.arn.startswith(
        "arn:aws:sagemaker:us-east-1:000000000000:pipeline/evalstack-custom-scorer/execution/"
    )
    execution_id = execution.arn.rsplit("/", 1)[-1]
    assert execution.s3_output_path == f"{output}/{execution.name}/{execution_id}"
    assert isinstance(execution.creation_time, datetime)
    # The spec the steps read sits beside the results, under the execution's name.
    spec = json.loads(storage.read_text(f"{output}/{execution.name}/spec.json"))
    assert spec["evaluate_base_model"] is True and spec["name"] == "tqa run"

    execution.wait(poll=1)
    assert execution.status == "Succeeded" and execution.failure_reason is None
    status = execution.get_status()
    assert status.overall_status == "Completed"
    assert [(s.name, s.status) for s in sorted(status.step_details, key=lambda s: s.name)] == [
        ("CheckEvaluateBaseModel", "Completed"),
        ("EvaluateBaseModel", "Completed"),
        ("EvaluateModel", "Completed"),
        ("ReportWithBase", "Completed"),
    ]
    assert all(s.start_time and s.end_time and s.start_time <= s.end_time for s in status.step_details)
    results = execution.results()
    assert results["metrics"]["accuracy"] == 1.0
    assert results["num_samples"] == N_QUESTIONS
    comparison = results["comparison"]
    assert json.loads(storage.read_text(storage.join(execution.s3_output_path, "base/results.json")))["metrics"][
        "accuracy"
    ] == pytest.approx(BASE_CORRECT / N_QUESTIONS)
    assert comparison["improvements"]["accuracy"] == pytest.approx(1 - BASE_CORRECT / N_QUESTIONS)

    again = EvaluationPipelineExecution.get(execution.arn)
    assert (again.name, again.status, again.eval_type, again.s3_output_path) == (
        execution.name,
        "Succeeded",
        "custom_scorer",
        execution.s3_output_path,
    )
    listed = EvaluationPipelineExecution.get_all("custom_scorer")
    assert [e.arn for e in listed] == [execution.arn]
    assert EvaluationPipelineExecution.get_all("benchmark") == []

    # A new process (client restart) lists and shows the same execution from EVALSTACK_HOME.
    table = _cli("executions", "list", "--type", "custom-scorer")
    assert execution.arn in table and "Succeeded" in table
    shown = _cli("executions", "show", execution.arn)
    assert f"Output:    {execution.s3_output_path}" in shown
    assert "ReportWithBase" in shown and "Completed" in shown
    waited = _cli("executions", "wait", execution.arn, "--poll", "1")
    assert f"{execution.name}: Succeeded" in waited


def test_without_base_model_runs_the_else_branch(model_server, dataset: str, tmp_path: Path) -> None:
    execution = _evaluator(model_server, dataset, str(tmp_path / "out")).evaluate()
    execution.wait(poll=1)
    steps = {s.name: s.status for s in execution.get_status().step_details}
    assert steps == {"EvaluateModel": "Completed", "CheckEvaluateBaseModel": "Completed", "Report": "Completed"}
    assert "comparison" not in execution.results()


def _wait_for_step(execution: EvaluationPipelineExecution, name: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s.name == name and s.status == status for s in execution.steps()):
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} never reached {status}: {execution.get_status()}")


def test_stop_mid_run_and_timeout(slow_model_server, dataset: str, tmp_path: Path) -> None:
    execution = _evaluator(slow_model_server, dataset, str(tmp_path / "out")).evaluate()
    _wait_for_step(execution, "EvaluateModel", "Executing")
    with pytest.raises(TimeoutError, match=r"still Executing after 0\.5s"):
        execution.wait(poll=0.2, timeout=0.5)
    execution.stop()
    assert execution.status in ("Stopping", "Stopped")
    with pytest.raises(RuntimeError, match="Stopped"):
        execution.wait(poll=0.5, timeout=60)
    steps = {s.name: s.status for s in execution.get_status().step_details}
    # The base-model condition does not wait for EvaluateModel, so it finished before the stop.
    assert steps == {"EvaluateModel": "Stopped", "CheckEvaluateBaseModel": "Completed"}
    assert execution.get_status().overall_status == "Stopped"
    with pytest.raises(ClientError, match="only an executing one can be stopped"):
        execution.stop()
    # 12 questions at 2 s each, one at a time: stopped long before the model saw them all.
    assert len(slow_model_server.requests) < N_QUESTIONS


def _sleeper_definition() -> str:
    """A one-step pipeline whose Processing step sleeps: cheap executions that stay Executing."""
    definition = json.loads(definition_json("benchmark"))
    step = definition["Steps"][0]
    step["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = ["python3", "-c", "import time; time.sleep(120)"]
    step["Arguments"]["AppSpecification"]["ContainerArguments"] = []
    step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 1
    definition["Steps"] = [step]
    for parameter in definition["Parameters"]:
        if parameter["Name"] != "OutputPath":
            parameter.setdefault("DefaultValue", "unused")
    return json.dumps(definition)


def test_start_creates_the_pipeline_and_at_most_ten_run_at_once(tmp_path: Path) -> None:
    definition = _sleeper_definition()
    role = "arn:aws:iam::000000000000:role/evalstack-local"
    output = str(tmp_path / "out")
    running = [
        EvaluationPipelineExecution.start("benchmark", f"sleeper-{i}", definition, role, output) for i in range(10)
    ]
    try:
        client = resolve_backend().client
        described = client.describe_pipeline(PipelineName="evalstack-benchmark")
        assert json.loads(described["PipelineDefinition"]) == json.loads(definition)
        assert {e.status for e in running} == {"Executing"}
        assert [e.name for e in running] == [f"sleeper-{i}" for i in range(10)]
        with pytest.raises(ConcurrencyLimitError, match="at most 10 evaluations can run at once") as caught:
            EvaluationPipelineExecution.start("benchmark", "one-too-many", definition, role, output)
        assert "10 are running" in str(caught.value)
        assert len(EvaluationPipelineExecution.get_all("benchmark")) == 10
        # An evaluation rejected by the limit leaves nothing behind: no orphan spec.json folder.
        rejected_output = tmp_path / "rejected"
        evaluator = CustomScorerEvaluator(
            evaluator="bleu", dataset=str(DATASET), model="listed-answers", s3_output_path=str(rejected_output)
        )
        with pytest.raises(ConcurrencyLimitError, match="at most 10 evaluations can run at once"):
            evaluator.evaluate()
        assert not rejected_output.exists() or list(rejected_output.rglob("*")) == []
    finally:
        for execution in running:
            execution.stop()
    for execution in running:
        with pytest.raises(RuntimeError, match="Stopped"):
            execution.wait(poll=0.5, timeout=60)
    # Capacity is back: the same name and output start again (a new request, so a new execution).
    again = EvaluationPipelineExecution.start("benchmark", "after-stop", definition, role, output)
    again.stop()
    assert again.arn not in {e.arn for e in running}
    with pytest.raises(RuntimeError, match="Stopped"):
        again.wait(poll=0.5, timeout=60)


DATASET = EXAMPLES / "truthfulqa_answers.jsonl"


def test_reference_thread_pool_example_runs_as_written(tmp_path: Path) -> None:
    """The reference's multi-benchmark example, with four custom-scorer runs started from four threads."""
    rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
    expected = sacrebleu.corpus_bleu([r["response"] for r in rows], [[r["reference"] for r in rows]]).score
    runs = ["alpha", "beta", "gamma", "delta"]

    def run_benchmark(run_name):
        evaluator = CustomScorerEvaluator(
            evaluator="bleu",
            dataset=str(DATASET),
            model="listed-answers",
            base_eval_name=run_name,
            s3_output_path=f"s3://bucket/results/{run_name.lower()}",
        )
        execution = evaluator.evaluate()
        execution.wait(poll=2)
        return {
            "benchmark": run_name,
            "status": execution.status,
            "results_path": execution.s3_output_path,
            "bleu": execution.results()["metrics"]["bleu"],
        }

    results = []
    with ThreadPoolExecutor(max_workers=4) as executor:
        futures = [executor.submit(run_benchmark, name) for name in runs]
        for future in as_completed(futures):
            results.append(future.result())
    assert sorted(r["benchmark"] for r in results) == sorted(runs)
    assert {r["status"] for r in results} == {"Succeeded"}
    assert all(r["results_path"].startswith(f"s3://bucket/results/{r['benchmark']}/") for r in results)
    assert [r["bleu"] for r in results] == [pytest.approx(expected)] * 4
    assert len(EvaluationPipelineExecution.get_all("custom_scorer")) == 4


def test_base_model_is_taken_from_the_model_package(aws: str, model_server, dataset: str, tmp_path: Path) -> None:
    import boto3

    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="tqa-ft")
    arn = sm.create_model_package(
        ModelPackageGroupName="tqa-ft",
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:1"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={
            "evalstack:model_reference": f"openai:{model_server.base_url}?model=candidate&api=chat",
            "evalstack:base_model": f"openai:{model_server.base_url}?model=base&api=chat",
        },
    )["ModelPackageArn"]
    evaluator = CustomScorerEvaluator(
        evaluator="accuracy", dataset=dataset, model=arn, evaluate_base_model=True, s3_output_path=str(tmp_path)
    )
    evaluator.hyperparameters.max_concurrency = 1
    execution = evaluator.evaluate()
    execution.wait(poll=1)
    comparison = execution.results()["comparison"]
    assert comparison["fine_tuned"]["accuracy"] == 1.0
    assert comparison["base"]["accuracy"] == pytest.approx(BASE_CORRECT / N_QUESTIONS)
    spec = json.loads(storage.read_text(f"{tmp_path}/{execution.name}/spec.json"))
    assert spec["model"] == arn and spec["base_model"] == f"openai:{model_server.base_url}?model=base&api=chat"


def test_instance_count_shards_the_evaluation(
    model_server, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes at a time: the third shard waits for a free slot, with no change in the results.
    monkeypatch.setenv("EVALSTACK_LOCAL_MAX_PROCESSES", "2")
    outputs = []
    for count in (1, 3):
        execution = _evaluator(model_server, dataset, str(tmp_path / f"n{count}"), instance_count=count).evaluate()
        execution.wait(poll=1)
        shards = storage.list_uris(storage.join(execution.s3_output_path, "records", "candidate"))
        assert [uri.rsplit("/", 1)[-1] for uri in shards] == [
            f"shard-{i:05d}-of-{count:05d}.jsonl" for i in range(count)
        ]
        outputs.append(storage.read_bytes(storage.join(execution.s3_output_path, "samples.jsonl")))
    assert outputs[0] == outputs[1]
    with pytest.raises(ValueError, match="instance_count: must be a positive integer, got 0"):
        _evaluator(model_server, dataset, str(tmp_path), instance_count=0)
    for too_many in (101, 1000):
        output = tmp_path / f"too-many-{too_many}"
        with pytest.raises(ValueError, match=f"instance_count: must be an integer from 1 to 100 .*got {too_many}"):
            _evaluator(model_server, dataset, str(output), instance_count=too_many).evaluate()
        assert not output.exists()


def test_a_start_sagemaker_rejects_leaves_nothing_in_s3(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same cleanup on the SageMaker backend (moto): spec.json is written to S3 before the start,
    and removed when the service answers the start with an error."""
    import boto3

    bucket = "evalstack-rejected-start"
    boto3.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv("EVALSTACK_BACKEND", "sagemaker")
    monkeypatch.setenv("EVALSTACK_PIPELINE_CUSTOM_SCORER", "not-deployed")
    evaluator = CustomScorerEvaluator(
        evaluator="bleu", dataset=str(DATASET), model="listed-answers", s3_output_path=f"s3://{bucket}/evals"
    )
    with pytest.raises(ClientError):
        evaluator.evaluate()
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []) == []
