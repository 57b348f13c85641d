"""Continuous-evaluation trigger against moto in server mode (S3, KMS, SageMaker pipelines and model
packages), with real Scheduler and EventBridge event shapes; the 10-execution limit uses a Stubber
(moto reports every execution as Succeeded at once), validated against the SageMaker service model."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import boto3
import pytest
from botocore.stub import Stubber

from evalstack.lambdas import trigger
from evalstack.models.model_package import BASE_MODEL_KEY
from evalstack.pipeline.definition import build_definition
from evalstack.spec import EvaluationSpec
from tests.support.eventbridge import model_package_state_change, scheduler_invocation

ROLE = "arn:aws:iam::123456789012:role/evalstack-sagemaker"
TEMPLATE = {"eval_type": "benchmark", "benchmark": "mmlu", "subtasks": ["anatomy"], "evaluate_base_model": True}


@dataclass
class Deployment:
    bucket: str
    pipeline: str
    group: str
    key_arn: str

    def packages(self, *statuses: str, metadata: dict[str, str] | None = None) -> list[str]:
        sm = boto3.client("sagemaker")
        extra = {"CustomerMetadataProperties": metadata} if metadata else {}
        return [
            sm.create_model_package(
                ModelPackageGroupName=self.group,
                ModelApprovalStatus=status,
                InferenceSpecification={
                    "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1"}],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
                **extra,
            )["ModelPackageArn"]
            for status in statuses
        ]

    def executions(self) -> list[dict]:
        sm = boto3.client("sagemaker")
        return sm.list_pipeline_executions(PipelineName=self.pipeline)["PipelineExecutionSummaries"]


@pytest.fixture
def deployment(aws: str, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    suffix = uuid.uuid4().hex[:10]
    s3, sm, kms = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("kms")
    d = Deployment(
        bucket=f"evalstack-{suffix}",
        pipeline=f"evalstack-test-benchmark-{suffix}",
        group=f"models-{suffix}",
        key_arn=kms.create_key(Description="evalstack test")["KeyMetadata"]["Arn"],
    )
    s3.create_bucket(Bucket=d.bucket)
    sm.create_pipeline(
        PipelineName=d.pipeline,
        PipelineDefinition=json.dumps(build_definition("benchmark", role_arn=ROLE)),
        RoleArn=ROLE,
    )
    sm.create_model_package_group(ModelPackageGroupName=d.group)
    for name, value in {
        "PIPELINE_NAME": d.pipeline,
        "MODEL_PACKAGE_GROUP": d.group,
        "OUTPUT_URI": f"s3://{d.bucket}/evaluations",
        "SPEC_TEMPLATE": json.dumps(TEMPLATE),
        "KMS_KEY_ID": d.key_arn,
    }.items():
        monkeypatch.setenv(name, value)
    return d


def _parameters(execution_arn: str) -> dict[str, str]:
    sm = boto3.client("sagemaker")
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution_arn)["PipelineParameters"]
    return {p["Name"]: p["Value"] for p in params}


def _read(uri: str) -> str:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def test_schedule_evaluates_newest_candidate_once_per_scheduled_time(deployment: Deployment) -> None:
    approved, pending, _rejected = deployment.packages("Approved", "PendingManualApproval", "Rejected")
    event = scheduler_invocation("nightly", "2026-11-28T02:00:00Z")

    first = trigger.handler(event)

    assert first["status"] == "started"
    assert first["model_package_arn"] == pending  # newest of Approved/Pending; the Rejected one is skipped
    assert first["base_model_package_arn"] == approved
    spec = EvaluationSpec.from_json(_read(first["spec_uri"]), source=first["spec_uri"])
    assert (spec.model, spec.base_model, spec.benchmark, spec.subtasks) == (pending, approved, "MMLU", ["anatomy"])
    assert (spec.model_package_group, spec.kms_key_id) == (deployment.group, deployment.key_arn)
    prefix = f"s3://{deployment.bucket}/evaluations/{deployment.pipeline}/{first['token'][:32]}"
    assert _parameters(first["pipeline_execution_arn"]) == {
        "SpecUri": f"{prefix}/spec.json",
        "OutputPath": prefix,
        "EvaluateBaseModel": "true",
    }
    head = boto3.client("s3").head_object(Bucket=deployment.bucket, Key=first["spec_uri"].split("/", 3)[3])
    assert head["ServerSideEncryption"] == "aws:kms"

    # Scheduler retries and Lambda's at-least-once delivery re-send the same scheduled time.
    again = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z", attempt=2))
    assert again["status"] == "duplicate"
    assert again["pipeline_execution_arn"] == first["pipeline_execution_arn"]
    assert len(deployment.executions()) == 1

    next_night = trigger.handler(scheduler_invocation("nightly", "2026-11-29T02:00:00Z"))
    assert next_night["status"] == "started"
    assert next_night["token"] != first["token"]
    assert len(deployment.executions()) == 2


def test_registered_package_event_evaluates_that_package_once(deployment: Deployment) -> None:
    approved, pending = deployment.packages("Approved", "PendingManualApproval")
    event = model_package_state_change(pending, deployment.group, 2, "PendingManualApproval", "e-1")

    first = trigger.handler(event)
    duplicate = trigger.handler({**event, "id": "e-1-redelivered"})

    assert (first["status"], first["model_package_arn"], first["base_model_package_arn"]) == (
        "started",
        pending,
        approved,
    )
    assert duplicate["status"] == "duplicate"
    assert [e["PipelineExecutionArn"] for e in deployment.executions()] == [first["pipeline_execution_arn"]]
    assert deployment.executions()[0]["PipelineExecutionDisplayName"] == f"package-{deployment.group}-2"


def test_empty_group_starts_nothing(deployment: Deployment) -> None:
    result = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))
    assert result == {"status": "no-model-package", "model_package_group": deployment.group}
    assert deployment.executions() == []


def test_event_of_another_group_is_refused(deployment: Deployment) -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/other/1"
    event = model_package_state_change(arn, "other", 1, "PendingManualApproval", "e-9")
    with pytest.raises(ValueError, match=r"event e-9: model package group 'other' is not"):
        trigger.handler(event)


def test_unsupported_event_is_refused(deployment: Deployment) -> None:
    with pytest.raises(ValueError, match=r"unsupported event: source='aws.ec2'"):
        trigger.handler({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"})


def test_ten_executing_evaluations_defer_the_start(deployment: Deployment) -> None:
    (package,) = deployment.packages("PendingManualApproval")
    sm = boto3.client("sagemaker")
    executing = [
        {
            "PipelineExecutionArn": f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e{i}",
            "PipelineExecutionStatus": "Executing",
        }
        for i in range(10)
    ]
    config = trigger.TriggerConfig.from_env()
    with Stubber(sm) as stub:
        stub.add_response(
            "list_model_packages",
            {"ModelPackageSummaryList": [
                {"ModelPackageArn": package, "ModelPackageGroupName": deployment.group, "ModelPackageVersion": 1,
                 "CreationTime": "2026-11-28T00:00:00Z", "ModelPackageStatus": "Completed",
                 "ModelApprovalStatus": "PendingManualApproval"}
            ]},
            {"ModelPackageGroupName": deployment.group, "SortBy": "CreationTime", "SortOrder": "Descending"},
        )  # fmt: skip
        stub.add_response(
            "list_pipeline_executions", {"PipelineExecutionSummaries": executing}, {"PipelineName": deployment.pipeline}
        )
        with pytest.raises(trigger.ConcurrencyLimitReached, match="10 evaluations are executing"):
            trigger.start_evaluation(
                scheduler_invocation("nightly", "2026-11-28T02:00:00Z"), config, sm=sm, s3=boto3.client("s3")
            )
        stub.assert_no_pending_responses()
    assert boto3.client("s3").list_objects_v2(Bucket=deployment.bucket).get("KeyCount") == 0


def test_first_package_of_a_group_takes_its_base_from_its_metadata(deployment: Deployment) -> None:
    base = "bedrock:meta.llama3-8b-instruct-v1:0"
    (package,) = deployment.packages("PendingManualApproval", metadata={BASE_MODEL_KEY: base})

    result = trigger.handler(model_package_state_change(package, deployment.group, 1, "PendingManualApproval", "e-1"))

    assert (result["model_package_arn"], result["base_model_package_arn"]) == (package, base)
    spec = EvaluationSpec.from_json(_read(result["spec_uri"]), source=result["spec_uri"])
    assert (spec.model, spec.base_model, spec.evaluate_base_model) == (package, base, True)
    assert _parameters(result["pipeline_execution_arn"])["EvaluateBaseModel"] == "true"


def test_first_package_without_base_metadata_is_evaluated_alone(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    (package,) = deployment.packages("PendingManualApproval")

    with caplog.at_level("INFO", logger="evalstack"):
        result = trigger.handler(
            model_package_state_change(package, deployment.group, 1, "PendingManualApproval", "e-1")
        )

    assert (result["status"], result["base_model_package_arn"]) == ("started", None)
    spec = EvaluationSpec.from_json(_read(result["spec_uri"]), source=result["spec_uri"])
    assert (spec.base_model, spec.evaluate_base_model) == (None, False)
    assert _parameters(result["pipeline_execution_arn"])["EvaluateBaseModel"] == "false"
    (why,) = [r.evalstack for r in caplog.records if r.getMessage() == "trigger.no_base_model"]
    assert why["model_package_arn"] == package
    assert BASE_MODEL_KEY in why["reason"]


def test_trigger_reads_the_base_model_key_the_model_layer_writes() -> None:
    assert trigger.BASE_MODEL_KEY == BASE_MODEL_KEY


def test_redelivery_after_spec_was_written_reuses_that_spec(deployment: Deployment) -> None:
    approved, pending = deployment.packages("Approved", "PendingManualApproval")
    first = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))
    written = _read(first["spec_uri"])
    # The first attempt died after StartPipelineExecution, before it wrote the marker ...
    s3 = boto3.client("s3")
    s3.delete_object(
        Bucket=deployment.bucket, Key=first["spec_uri"].split("/", 3)[3].replace("spec.json", "execution.json")
    )
    # ... and a newer package was registered before the event came again.
    deployment.packages("PendingManualApproval")

    again = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z", attempt=2))

    assert (again["status"], again["token"], again["spec_uri"]) == ("started", first["token"], first["spec_uri"])
    assert (again["model_package_arn"], again["base_model_package_arn"]) == (pending, approved)
    assert _read(first["spec_uri"]) == written
    # SageMaker returns the first execution for the same ClientRequestToken (moto starts another);
    # either way the execution reads the spec the first attempt wrote.
    assert _parameters(again["pipeline_execution_arn"]) == _parameters(first["pipeline_execution_arn"])
