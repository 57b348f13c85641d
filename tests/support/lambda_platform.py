"""One continuous evaluation deployed on moto in server mode, as the Lambda handler tests need it.

A bucket with the trigger's control prefix and the results prefix, a KMS key, the pipeline, a model
package group, the trigger's retry queue, and the gate's SNS topic delivering to an SQS queue the
tests read. The handlers' environment is set the way ContinuousEvaluation and ModelApprovalGate set it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from evalstack.lambdas import trigger
from evalstack.pipeline.definition import build_definition
from tests.support.eventbridge import model_package_state_change, pipeline_execution_status_change, sqs_event

ROLE = "arn:aws:iam::123456789012:role/evalstack-sagemaker"
TEMPLATE = {"eval_type": "benchmark", "benchmark": "mmlu", "subtasks": ["anatomy"], "evaluate_base_model": True}
PASSING = {"metrics": {"accuracy": 0.72}}
PASSING_COMPARISON = {"base": {"accuracy": 0.65}, "improvement": 0.07, "improvements": {"accuracy": 0.07}}


def split(uri: str) -> tuple[str, str]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bucket, key


@dataclass
class Platform:
    bucket: str
    pipeline: str
    group: str
    key_arn: str
    topic_arn: str
    notification_queue_url: str
    retry_queue_url: str
    retry_queue_arn: str

    @property
    def control_uri(self) -> str:
        return f"s3://{self.bucket}/control/{self.pipeline}"

    @classmethod
    def create(cls, monkeypatch: pytest.MonkeyPatch) -> Platform:
        suffix = uuid.uuid4().hex[:10]
        s3, sm, kms, sns, sqs = (boto3.client(n) for n in ("s3", "sagemaker", "kms", "sns", "sqs"))
        pipeline, group, bucket = f"evalstack-test-benchmark-{suffix}", f"models-{suffix}", f"evalstack-{suffix}"
        s3.create_bucket(Bucket=bucket)
        sm.create_pipeline(
            PipelineName=pipeline,
            PipelineDefinition=json.dumps(build_definition("benchmark", role_arn=ROLE)),
            RoleArn=ROLE,
        )
        sm.create_model_package_group(ModelPackageGroupName=group)
        topic_arn = sns.create_topic(Name=f"approvals-{suffix}")["TopicArn"]
        notifications = sqs.create_queue(QueueName=f"approvals-{suffix}")["QueueUrl"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=_queue_arn(sqs, notifications))
        retries = sqs.create_queue(QueueName=f"trigger-retries-{suffix}")["QueueUrl"]
        platform = cls(
            bucket=bucket,
            pipeline=pipeline,
            group=group,
            key_arn=kms.create_key(Description="evalstack test")["KeyMetadata"]["Arn"],
            topic_arn=topic_arn,
            notification_queue_url=notifications,
            retry_queue_url=retries,
            retry_queue_arn=_queue_arn(sqs, retries),
        )
        for name, value in {
            "PIPELINE_NAME": pipeline,
            "MODEL_PACKAGE_GROUP": group,
            "OUTPUT_URI": f"s3://{bucket}/evaluations",
            "CONTROL_URI": platform.control_uri,
            "SPEC_TEMPLATE": json.dumps(TEMPLATE),
            "KMS_KEY_ID": platform.key_arn,
            "RETRY_QUEUE_URL": retries,
            # Deferred events are receivable at once; test_retry_delay covers the real delays.
            "RETRY_DELAY_SECONDS": "0",
            "TOPIC_ARN": topic_arn,
            "METRIC": "accuracy",
            "MIN_SCORE": "0.6",
            "MIN_IMPROVEMENT": "0.0",
        }.items():
            monkeypatch.setenv(name, value)
        return platform

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

    def package(self, arn: str) -> dict[str, Any]:
        return boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)

    def approve_by_hand(self, arn: str) -> None:
        boto3.client("sagemaker").update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="approved by a person"
        )

    def executions(self) -> list[dict[str, Any]]:
        sm = boto3.client("sagemaker")
        return sm.list_pipeline_executions(PipelineName=self.pipeline)["PipelineExecutionSummaries"]

    def parameters(self, execution_arn: str) -> dict[str, str]:
        sm = boto3.client("sagemaker")
        params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution_arn)["PipelineParameters"]
        return {p["Name"]: p["Value"] for p in params}

    def keys(self, prefix: str = "") -> list[str]:
        listing = boto3.client("s3").list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def read(self, uri: str) -> bytes:
        bucket, key = split(uri)
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()

    def write(self, uri: str, data: Any) -> None:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        bucket, key = split(uri)
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)

    def evaluate(self, package_arn: str, version: int = 1, event_id: str = "e-1") -> dict[str, Any]:
        """What the trigger does on the package's registration event: the started execution's marker."""
        event = model_package_state_change(package_arn, self.group, version, "PendingManualApproval", event_id)
        started = trigger.handler(event)
        assert started["status"] == "started", started
        return started

    def write_report(self, started: dict[str, Any], results: Any, comparison: Any = None) -> None:
        """What the Report step writes under <OutputPath>/<execution id>/ (``bytes`` are written as is)."""
        output = f"{started['output_path']}/{started['pipeline_execution_arn'].rsplit('/', 1)[-1]}"
        self.write(f"{output}/results.json", results)
        if comparison is not None:
            self.write(f"{output}/comparison.json", comparison)

    def gate_event(
        self, execution_arn: str, status: str = "Succeeded", event_id: str = "ev-1", **kwargs: str
    ) -> dict[str, Any]:
        pipeline_arn = execution_arn.split("/execution/")[0]
        return pipeline_execution_status_change(pipeline_arn, execution_arn, status, event_id, **kwargs)

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(json.loads(m["Body"])["Message"]) for m in self._drain(self.notification_queue_url)]

    def retry_event(self) -> dict[str, Any]:
        """The retry queue's messages as the SQS event source hands them to the trigger (and deletes them)."""
        return sqs_event(self._drain(self.retry_queue_url), self.retry_queue_arn)

    def retry_queue_depth(self) -> dict[str, int]:
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=self.retry_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return {
            "visible": int(attributes["ApproximateNumberOfMessages"]),
            "delayed": int(attributes["ApproximateNumberOfMessagesDelayed"]),
        }

    def _drain(self, queue_url: str) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        # moto delivers SNS to SQS and honours delays synchronously: a short poll sees every visible message.
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        received = messages.get("Messages", [])
        for message in received:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return received


def _queue_arn(sqs: Any, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
