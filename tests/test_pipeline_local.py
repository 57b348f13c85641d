"""The local backend runs the real pipeline definition end to end: subprocess steps, the engine,
a loopback OpenAI-compatible model server and TruthfulQA questions from shared/benchmarks."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from evalstack import storage
from evalstack.pipeline.definition import QualityGate, definition_json
from evalstack.pipeline.local import LocalSageMakerClient
from evalstack.pipeline.local.client import MAX_CONCURRENT_EXECUTIONS
from evalstack.spec import DatasetSpec, EvaluationSpec
from tests.conftest import BASE_CORRECT, TRUTHFULQA_QUESTIONS, scripted_answers
from tests.support.openai_server import serve
from tests.support.processes import parent_pid

N_QUESTIONS = TRUTHFULQA_QUESTIONS
ROLE_ARN = "arn:aws:iam::000000000000:role/evalstack-local"
OUTPUT = "s3://evalstack-test/evaluations"
TERMINAL = ("Succeeded", "Failed", "Stopped")


@pytest.fixture
def slow_model_server(questions: list[dict[str, str]]) -> Iterator:
    with serve(scripted_answers(questions, 0.4, 1.0)) as server:
        yield server


def _spec_uri(server, dataset: str, *, name: str = "tqa", concurrency: int = 4) -> str:
    spec = EvaluationSpec(
        eval_type="custom_scorer",
        name=name,
        model=f"openai:{server.base_url}?model=candidate&api=chat",
        base_model=f"openai:{server.base_url}?model=base&api=chat",
        dataset=DatasetSpec(uri=dataset),
        metrics=["accuracy"],
        hyperparameters={"max_concurrency": concurrency},
    ).validate()
    uri = f"s3://evalstack-test/specs/{name}.json"
    storage.write_text(uri, spec.to_json())
    return uri


def _params(spec_uri: str, *, base: bool, instances: int = 1) -> list[dict[str, str]]:
    return [
        {"Name": "SpecUri", "Value": spec_uri},
        {"Name": "OutputPath", "Value": OUTPUT},
        {"Name": "EvaluateBaseModel", "Value": "true" if base else "false"},
        {"Name": "ProcessingImageUri", "Value": "local"},
        {"Name": "InstanceCount", "Value": str(instances)},
        {"Name": "ExecutionRoleArn", "Value": ROLE_ARN},
    ]


def _create(client: LocalSageMakerClient, name: str = "custom", **options) -> None:
    client.create_pipeline(
        PipelineName=name, PipelineDefinition=definition_json("custom_scorer", **options), RoleArn=ROLE_ARN
    )


def _wait(client: LocalSageMakerClient, arn: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = client.describe_pipeline_execution(PipelineExecutionArn=arn)
        if desc["PipelineExecutionStatus"] in TERMINAL:
            return desc
        time.sleep(0.3)
    raise TimeoutError(arn)


def _wait_step(client: LocalSageMakerClient, arn: str, name: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _step_status(client, arn).get(name) == status:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{name} never reached {status}: {_step_status(client, arn)}")


def _step_status(client: LocalSageMakerClient, arn: str) -> dict[str, str]:
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    return {s["StepName"]: s["StepStatus"] for s in steps}


def _output(arn: str) -> str:
    return storage.join(OUTPUT, arn.rsplit("/", 1)[-1])


def _results(arn: str, path: str = "results.json") -> dict:
    return json.loads(storage.read_text(storage.join(_output(arn), path)))


def test_base_on_runs_base_and_comparison(model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client)
    arn = client.start_pipeline_execution(
        PipelineName="custom", PipelineParameters=_params(_spec_uri(model_server, dataset), base=True)
    )["PipelineExecutionArn"]
    desc = _wait(client, arn)
    assert desc["PipelineExecutionStatus"] == "Succeeded", desc.get("FailureReason")
    assert _step_status(client, arn) == {
        "EvaluateModel": "Succeeded",
        "CheckEvaluateBaseModel": "Succeeded",
        "EvaluateBaseModel": "Succeeded",
        "ReportWithBase": "Succeeded",
    }
    assert _results(arn)["metrics"]["accuracy"] == 1.0
    assert _results(arn, "base/results.json")["metrics"]["accuracy"] == BASE_CORRECT / N_QUESTIONS
    assert storage.exists(storage.join(_output(arn), "comparison.json"))
    prop = json.loads(storage.read_text(storage.join(_output(arn), "ReportWithBase", "evaluation.json")))
    assert prop["metrics"]["accuracy"] == 1.0
    assert prop["base_metrics"]["accuracy"] == BASE_CORRECT / N_QUESTIONS


def test_base_off_skips_base_branch(model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client)
    arn = client.start_pipeline_execution(
        PipelineName="custom", PipelineParameters=_params(_spec_uri(model_server, dataset), base=False)
    )["PipelineExecutionArn"]
    assert _wait(client, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert _step_status(client, arn) == {
        "EvaluateModel": "Succeeded",
        "CheckEvaluateBaseModel": "Succeeded",
        "Report": "Succeeded",
    }
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    condition = next(s for s in steps if s["StepName"] == "CheckEvaluateBaseModel")
    assert condition["Metadata"] == {"Condition": {"Outcome": "False"}}
    assert not storage.exists(storage.join(_output(arn), "base", "results.json"))
    assert not storage.exists(storage.join(_output(arn), "comparison.json"))
    assert {body["model"] for _, body in model_server.requests} == {"candidate"}


def test_quality_gate_fails_execution(model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client, quality_gate=QualityGate("base_metrics.accuracy", 0.5))
    arn = client.start_pipeline_execution(
        PipelineName="custom", PipelineParameters=_params(_spec_uri(model_server, dataset), base=True)
    )["PipelineExecutionArn"]
    desc = _wait(client, arn)
    exec_id = arn.rsplit("/", 1)[-1]
    assert desc["PipelineExecutionStatus"] == "Failed"
    assert desc["FailureReason"] == (
        f"Quality gate failed: expected base_metrics.accuracy GreaterThanOrEqualTo 0.5 in execution {exec_id}"
    )
    statuses = _step_status(client, arn)
    assert statuses["QualityGateWithBase"] == "Succeeded"
    assert statuses["QualityGateWithBaseFailed"] == "Failed"
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    gate = next(s for s in steps if s["StepName"] == "QualityGateWithBase")
    assert gate["Metadata"] == {"Condition": {"Outcome": "False"}}


def test_quality_gate_passes(model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client, quality_gate=QualityGate("metrics.accuracy", 1.0, "Equals"))
    arn = client.start_pipeline_execution(
        PipelineName="custom", PipelineParameters=_params(_spec_uri(model_server, dataset), base=False)
    )["PipelineExecutionArn"]
    assert _wait(client, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert _step_status(client, arn)["QualityGate"] == "Succeeded"
    assert "QualityGateFailed" not in _step_status(client, arn)


def test_two_shards_equal_one_shard(model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client)
    spec_uri = _spec_uri(model_server, dataset)
    one = client.start_pipeline_execution(PipelineName="custom", PipelineParameters=_params(spec_uri, base=True))
    two = client.start_pipeline_execution(
        PipelineName="custom", PipelineParameters=_params(spec_uri, base=True, instances=2)
    )
    one_arn, two_arn = one["PipelineExecutionArn"], two["PipelineExecutionArn"]
    assert _wait(client, one_arn)["PipelineExecutionStatus"] == "Succeeded"
    assert _wait(client, two_arn)["PipelineExecutionStatus"] == "Succeeded"
    shards = storage.list_uris(storage.join(_output(two_arn), "records", "candidate"))
    assert [u.rsplit("/", 1)[-1] for u in shards] == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    for path in ("samples.jsonl", "base/samples.jsonl", "comparison.json"):
        assert storage.read_text(storage.join(_output(one_arn), path)) == storage.read_text(
            storage.join(_output(two_arn), path)
        )
    a, b = _results(one_arn), _results(two_arn)
    assert a["metrics"] == b["metrics"] and a["num_samples"] == b["num_samples"] == N_QUESTIONS


def test_stop_mid_run_terminates_step_processes(slow_model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client)
    arn = client.start_pipeline_execution(
        PipelineName="custom",
        PipelineParameters=_params(_spec_uri(slow_model_server, dataset, concurrency=1), base=False),
    )["PipelineExecutionArn"]
    _wait_step(client, arn, "EvaluateModel", "Executing")
    while not slow_model_server.requests:  # the step process is talking to the model
        time.sleep(0.1)
    steps = client.store.steps(arn)
    pids = json.loads(next(s for s in steps if s["name"] == "EvaluateModel")["pids"])
    runner = client.store.execution(arn)["runner_pid"]
    for pid in pids:  # forked from the runner's warm parent (a child of the runner), each in a group of its own
        assert os.getpgid(pid) == pid
        assert parent_pid(pid) != runner and parent_pid(parent_pid(pid)) == runner
    client.stop_pipeline_execution(PipelineExecutionArn=arn)
    desc = _wait(client, arn, timeout=60)
    assert desc["PipelineExecutionStatus"] == "Stopped"
    assert _step_status(client, arn) == {"EvaluateModel": "Stopped", "CheckEvaluateBaseModel": "Succeeded"}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert len(slow_model_server.requests) < N_QUESTIONS
    with pytest.raises(ClientError) as err:
        client.stop_pipeline_execution(PipelineExecutionArn=arn)
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_kill_runner_then_retry_resumes(slow_model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client)
    arn = client.start_pipeline_execution(
        PipelineName="custom",
        PipelineParameters=_params(_spec_uri(slow_model_server, dataset, concurrency=1), base=True),
    )["PipelineExecutionArn"]
    _wait_step(client, arn, "EvaluateModel", "Succeeded")
    first = {
        s["StepName"]: s
        for s in client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    }
    shard = storage.join(_output(arn), "records", "candidate", "shard-00000-of-00001.jsonl")
    shard_mtime = storage.local_path(shard).stat().st_mtime_ns
    assert _step_status(client, arn)["EvaluateBaseModel"] == "Executing"  # 12 slow base requests in flight
    runner = client.store.execution(arn)["runner_pid"]
    os.kill(runner, signal.SIGKILL)
    desc = _wait(client, arn, timeout=60)
    assert desc["PipelineExecutionStatus"] == "Failed"
    assert f"runner (pid {runner}) stopped" in desc["FailureReason"]
    assert _step_status(client, arn)["EvaluateBaseModel"] == "Failed"

    client.retry_pipeline_execution(PipelineExecutionArn=arn)
    desc = _wait(client, arn)
    assert desc["PipelineExecutionStatus"] == "Succeeded", desc.get("FailureReason")
    after = {
        s["StepName"]: s
        for s in client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    }
    assert after["EvaluateModel"]["StartTime"] == first["EvaluateModel"]["StartTime"]  # not run again
    assert storage.local_path(shard).stat().st_mtime_ns == shard_mtime
    assert after["ReportWithBase"]["StepStatus"] == "Succeeded"
    assert _results(arn, "base/results.json")["metrics"]["accuracy"] == BASE_CORRECT / N_QUESTIONS


def test_listing_survives_client_restart_and_paginates(model_server, dataset: str) -> None:
    client = LocalSageMakerClient()
    _create(client)
    spec_uri = _spec_uri(model_server, dataset)
    token = "t" * 40
    arn = client.start_pipeline_execution(
        PipelineName="custom",
        PipelineParameters=_params(spec_uri, base=True),
        PipelineExecutionDisplayName="first-run",
        ClientRequestToken=token,
    )["PipelineExecutionArn"]
    again = client.start_pipeline_execution(
        PipelineName="custom", PipelineParameters=_params(spec_uri, base=True), ClientRequestToken=token
    )
    assert again["PipelineExecutionArn"] == arn  # idempotent
    _wait(client, arn)
    del client

    fresh = LocalSageMakerClient()
    listed = fresh.list_pipeline_executions(PipelineName="custom")["PipelineExecutionSummaries"]
    assert [
        (e["PipelineExecutionArn"], e["PipelineExecutionStatus"], e["PipelineExecutionDisplayName"]) for e in listed
    ] == [(arn, "Succeeded", "first-run")]
    page1 = fresh.list_pipeline_execution_steps(PipelineExecutionArn=arn, MaxResults=3, SortOrder="Ascending")
    page2 = fresh.list_pipeline_execution_steps(
        PipelineExecutionArn=arn, MaxResults=3, NextToken=page1["NextToken"], SortOrder="Ascending"
    )
    assert "NextToken" not in page2
    names = [s["StepName"] for s in page1["PipelineExecutionSteps"] + page2["PipelineExecutionSteps"]]
    assert sorted(names) == ["CheckEvaluateBaseModel", "EvaluateBaseModel", "EvaluateModel", "ReportWithBase"]
    paged = [
        s["StepName"]
        for page in fresh.get_paginator("list_pipeline_execution_steps").paginate(
            PipelineExecutionArn=arn, SortOrder="Ascending", PaginationConfig={"PageSize": 1}
        )
        for s in page["PipelineExecutionSteps"]
    ]
    assert paged == names


def test_errors_have_boto3_shapes(tmp_path: Path) -> None:
    client = LocalSageMakerClient()
    with pytest.raises(client.exceptions.ResourceNotFound):
        client.describe_pipeline(PipelineName="missing")
    with pytest.raises(ParamValidationError):
        client.start_pipeline_execution(PipelineName="x", PipelineParameters=[{"Name": "SpecUri"}])
    _create(client)
    with pytest.raises(ClientError) as err:
        _create(client)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    client.update_pipeline(
        PipelineName="custom",
        PipelineDefinition=definition_json("custom_scorer", quality_gate=QualityGate("metrics.accuracy", 0.9)),
        PipelineDisplayName="Custom scorer",
        ParallelismConfiguration={"MaxParallelExecutionSteps": 3},
    )
    described = client.describe_pipeline(PipelineName="custom")
    assert described["PipelineDisplayName"] == "Custom scorer"
    assert described["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 3}
    assert "QualityGate" in described["PipelineDefinition"]
    assert described["PipelineArn"] == "arn:aws:sagemaker:us-east-1:000000000000:pipeline/custom"
    with pytest.raises(ClientError) as err:
        client.start_pipeline_execution(
            PipelineName="custom", PipelineParameters=[{"Name": "InstanceCount", "Value": "two"}]
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "'InstanceCount' is a Integer" in str(err.value)
    with pytest.raises(ClientError) as err:
        client.start_pipeline_execution(PipelineName="custom", PipelineParameters=[{"Name": "Nope", "Value": "1"}])
    assert "unknown parameter 'Nope'" in str(err.value)


def test_concurrency_limit(tmp_path: Path) -> None:
    """Ten executions run at once; the eleventh gets ResourceLimitExceeded until one is stopped."""
    client = LocalSageMakerClient()
    # A one-step pipeline whose Processing step sleeps: the limit is about executions, not the engine.
    definition = {
        "Version": "2020-12-01",
        "Parameters": [],
        "Steps": [
            {
                "Name": "Sleep",
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {
                        "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
                    },
                    "AppSpecification": {
                        "ImageUri": "local",
                        "ContainerEntrypoint": ["python3", "-c", "import time; time.sleep(120)"],
                    },
                    "RoleArn": ROLE_ARN,
                },
            }
        ],
    }
    client.create_pipeline(PipelineName="sleep", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arns = [
        client.start_pipeline_execution(PipelineName="sleep")["PipelineExecutionArn"]
        for _ in range(MAX_CONCURRENT_EXECUTIONS)
    ]
    try:
        with pytest.raises(client.exceptions.ResourceLimitExceeded) as err:
            client.start_pipeline_execution(PipelineName="sleep")
        assert "At most 10 pipeline executions can run at once" in str(err.value)
        client.stop_pipeline_execution(PipelineExecutionArn=arns[0])
        assert _wait(client, arns[0], timeout=60)["PipelineExecutionStatus"] == "Stopped"
        arns.append(client.start_pipeline_execution(PipelineName="sleep")["PipelineExecutionArn"])
    finally:
        for arn in arns[1:]:
            client.stop_pipeline_execution(PipelineExecutionArn=arn)
        for arn in arns:
            assert _wait(client, arn, timeout=60)["PipelineExecutionStatus"] == "Stopped"
