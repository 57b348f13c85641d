"""The execution API on the SageMaker backend: moto in server mode on loopback for S3, SSM and the
pipeline calls it implements (CreatePipeline, StartPipelineExecution, DescribePipelineExecution,
ListPipelineExecutions, ListPipelineParametersForExecution); botocore's Stubber, which validates
every request and response against the service model, for ListPipelineExecutionSteps,
StopPipelineExecution and RetryPipelineExecution, which moto lacks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from evalstack.evaluate import BenchMarkEvaluator, CustomScorerEvaluator, EvaluationPipelineExecution
from evalstack.pipeline.definition import definition_json
from evalstack.runtime.backend import resolve_backend
from tests.conftest import EXAMPLES

DATASET = EXAMPLES / "truthfulqa_answers.jsonl"
ROLE = "arn:aws:iam::123456789012:role/evalstack"


@dataclass
class SdkSession:
    """The two attributes evalstack reads from a SageMaker Python SDK ``Session``."""

    boto_session: Any
    sagemaker_client: Any


@pytest.fixture
def deployed(aws: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What the CDK stack leaves behind: the custom-scorer pipeline and its SSM parameters."""
    stage = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("EVALSTACK_STAGE", stage)
    pipeline = f"evalstack-{stage}-custom-scorer"
    bucket = f"evalstack-{stage}"  # the moto server lives for the session: one bucket per test
    boto3.client("s3").create_bucket(Bucket=bucket)
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name=f"/evalstack/{stage}/pipelines/custom_scorer", Value=pipeline, Type="String")
    ssm.put_parameter(Name=f"/evalstack/{stage}/output-uri", Value=f"s3://{bucket}/stack-output", Type="String")
    boto3.client("sagemaker").create_pipeline(
        PipelineName=pipeline, PipelineDefinition=definition_json("custom_scorer", role_arn=ROLE), RoleArn=ROLE
    )
    return {"stage": stage, "pipeline": pipeline, "bucket": bucket}


def _keys(bucket: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_backend_choice(deployed: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend().kind == "local"  # no session, no region: the embedded default
    assert resolve_backend(region="us-east-1").kind == "sagemaker"  # pipelines are deployed there
    monkeypatch.setenv("EVALSTACK_STAGE", "nothing-deployed")
    assert resolve_backend(region="us-east-1").kind == "local"
    monkeypatch.setenv("EVALSTACK_BACKEND", "sagemaker")
    assert resolve_backend().kind == "sagemaker"
    monkeypatch.setenv("EVALSTACK_BACKEND", "cloud")
    with pytest.raises(ValueError, match="EVALSTACK_BACKEND: must be 'local' or 'sagemaker', got 'cloud'"):
        resolve_backend()


def test_evaluate_starts_the_deployed_pipeline(deployed: dict[str, str]) -> None:
    bucket = deployed["bucket"]
    execution = CustomScorerEvaluator(
        evaluator="rouge", dataset=str(DATASET), model="m", region="us-east-1", base_eval_name="sm-run"
    ).evaluate()
    pipeline = deployed["pipeline"]
    assert execution.arn.startswith(f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline}/execution/")
    execution_id = execution.arn.rsplit("/", 1)[-1]
    prefix = f"stack-output/{execution.name}"  # the stack's output-uri parameter is the default
    assert execution.s3_output_path == f"s3://{bucket}/{prefix}/{execution_id}"
    assert _keys(bucket) == [f"{prefix}/spec.json"]
    spec = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/spec.json")["Body"].read())
    assert spec["eval_type"] == "custom_scorer" and spec["name"] == "sm-run"

    sm = boto3.client("sagemaker")
    parameters = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution.arn)["PipelineParameters"]
    assert sorted((p["Name"], p["Value"]) for p in parameters) == [
        ("EvaluateBaseModel", "false"),
        ("OutputPath", f"s3://{bucket}/{prefix}"),
        ("SpecUri", f"s3://{bucket}/{prefix}/spec.json"),
    ]
    described = sm.describe_pipeline_execution(PipelineExecutionArn=execution.arn)
    assert described["PipelineExecutionDisplayName"] == execution.name
    assert execution.status == "Succeeded"  # moto finishes executions at once

    found = EvaluationPipelineExecution.get(execution.arn, region="us-east-1")
    assert (found.name, found.eval_type, found.s3_output_path, found.status) == (
        execution.name,
        "custom_scorer",
        execution.s3_output_path,
        "Succeeded",
    )
    listed = EvaluationPipelineExecution.get_all("custom_scorer", region="us-east-1")
    assert [e.arn for e in listed] == [execution.arn]
    assert listed[0].s3_output_path == execution.s3_output_path
    assert EvaluationPipelineExecution.get_all("benchmark", region="us-east-1") == []
    found.wait(poll=1)  # already Succeeded: one describe call, no sleep


def test_execution_started_elsewhere_is_found_from_its_parameters(deployed: dict[str, str]) -> None:
    """An execution the trigger Lambda started (no evalstack description) still resolves."""
    bucket = deployed["bucket"]
    prefix = f"s3://{bucket}/evalstack-{deployed['stage']}-custom-scorer/abc"
    arn = boto3.client("sagemaker").start_pipeline_execution(
        PipelineName=deployed["pipeline"],
        PipelineExecutionDisplayName="scheduled-2026-01-01",
        PipelineParameters=[
            {"Name": "SpecUri", "Value": f"{prefix}/spec.json"},
            {"Name": "OutputPath", "Value": prefix},
            {"Name": "EvaluateBaseModel", "Value": "false"},
        ],
        ClientRequestToken=uuid.uuid4().hex,
    )["PipelineExecutionArn"]
    found = EvaluationPipelineExecution.get(arn, region="us-east-1")
    assert found.name == "scheduled-2026-01-01"
    assert found.eval_type == "custom_scorer"
    assert found.s3_output_path == f"{prefix}/{arn.rsplit('/', 1)[-1]}"


def test_missing_pipeline_is_a_clear_error_and_writes_nothing(
    deployed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALSTACK_BACKEND", "sagemaker")
    bucket = deployed["bucket"]
    model = "openai:http://127.0.0.1:9/v1?model=never-called"
    evaluator = BenchMarkEvaluator("GSM8K", model=model, s3_output_path=f"s3://{bucket}/evals")
    with pytest.raises(ValueError, match=f"/evalstack/{deployed['stage']}/pipelines/benchmark") as caught:
        evaluator.evaluate()
    assert "EVALSTACK_PIPELINE_BENCHMARK" in str(caught.value)
    assert _keys(bucket) == []


def _page(names: list[str], token: str | None = None) -> dict[str, Any]:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    steps = [
        {
            "StepName": name,
            "StepDisplayName": name,
            "StepStatus": "Succeeded",
            "StartTime": start,
            "EndTime": start.replace(minute=5),
            "Metadata": {},
            "AttemptCount": 1,
        }
        for name in names
    ]
    page: dict[str, Any] = {"PipelineExecutionSteps": steps}
    if token:
        page["NextToken"] = token
    return page


def test_steps_stop_and_retry_through_the_service_model(deployed: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("EVALSTACK_BACKEND", "sagemaker")
    pipeline = deployed["pipeline"]
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline}/execution/0123456789ab"
    pipeline_arn = arn.split("/execution/")[0]
    output = f"s3://{deployed['bucket']}/evals/run-1"
    client = boto3.client("sagemaker")
    stub = Stubber(client)
    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def describe(status: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {
            "PipelineArn": pipeline_arn,
            "PipelineExecutionArn": arn,
            "PipelineExecutionDisplayName": "run-1",
            "PipelineExecutionStatus": status,
            "PipelineExecutionDescription": json.dumps(
                {"evalstack": {"eval_type": "custom_scorer", "output_path": output}}
            ),
            "CreationTime": created,
        }
        if reason:
            body["FailureReason"] = reason
        stub.add_response("describe_pipeline_execution", body, {"PipelineExecutionArn": arn})

    describe("Executing")  # get
    describe("Executing")  # get_status: refresh
    stub.add_response(
        "list_pipeline_execution_steps",
        _page(["EvaluateModel", "CheckEvaluateBaseModel"], token="page-2"),
        {"PipelineExecutionArn": arn, "SortOrder": "Ascending"},
    )
    stub.add_response(
        "list_pipeline_execution_steps",
        _page(["Report"]),
        {"PipelineExecutionArn": arn, "SortOrder": "Ascending", "NextToken": "page-2"},
    )
    stub.add_response(
        "stop_pipeline_execution",
        {"PipelineExecutionArn": arn},
        {"PipelineExecutionArn": arn, "ClientRequestToken": ANY},
    )
    describe("Stopped")
    stub.add_response(
        "list_pipeline_executions",
        {"PipelineExecutionSummaries": []},
        {"PipelineName": pipeline, "SortOrder": "Descending"},
    )  # retry: the concurrency check
    stub.add_response(
        "retry_pipeline_execution",
        {"PipelineExecutionArn": arn},
        {"PipelineExecutionArn": arn, "ClientRequestToken": ANY},
    )
    describe("Failed", "Step failure: EvaluateModel: AlgorithmError")  # retry: refresh
    describe("Failed", "Step failure: EvaluateModel: AlgorithmError")  # wait
    session = SdkSession(boto3.Session(region_name="us-east-1"), client)
    with stub:
        execution = EvaluationPipelineExecution.get(arn, session=session)
        assert (execution.eval_type, execution.s3_output_path) == ("custom_scorer", f"{output}/0123456789ab")
        status = execution.get_status()
        assert status.overall_status == "Executing"
        assert [(s.name, s.status) for s in status.step_details] == [
            ("EvaluateModel", "Completed"),
            ("CheckEvaluateBaseModel", "Completed"),
            ("Report", "Completed"),
        ]
        assert status.step_details[0].start_time == "2026-01-01T12:00:00+00:00"
        assert status.step_details[0].end_time == "2026-01-01T12:05:00+00:00"
        execution.stop()
        assert execution.status == "Stopped"
        execution.retry()
        assert execution.status == "Failed"
        assert execution.failure_reason == "Step failure: EvaluateModel: AlgorithmError"
        with pytest.raises(RuntimeError, match="Failed: Step failure: EvaluateModel"):
            execution.wait(poll=1)
        stub.assert_no_pending_responses()
