"""Real EventBridge/Scheduler event shapes for the Lambda handler tests (field names as AWS sends them)."""

from __future__ import annotations

import json
from typing import Any

from evalstack.lambdas.trigger import SCHEDULER_INPUT

ACCOUNT = "123456789012"
REGION = "us-east-1"


def scheduler_invocation(schedule_name: str, scheduled_time: str, attempt: int = 1) -> dict[str, Any]:
    """What the schedule target delivers: SCHEDULER_INPUT with the <aws.scheduler.*> attributes filled in."""
    values = {
        "<aws.scheduler.schedule-arn>": f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{schedule_name}",
        "<aws.scheduler.scheduled-time>": scheduled_time,
        "<aws.scheduler.execution-id>": f"{schedule_name}-execution-{attempt}",
        "<aws.scheduler.attempt-number>": str(attempt),
    }
    text = json.dumps(SCHEDULER_INPUT)
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


def model_package_state_change(package_arn: str, group: str, version: int, status: str, event_id: str) -> dict:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "2026-11-28T12:00:00Z",
        "region": REGION,
        "resources": [package_arn],
        "detail": {
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelPackageArn": package_arn,
            "CreationTime": 1795867200000,
            "InferenceSpecification": {
                "Containers": [{"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/model:latest"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "CertifyForMarketplace": False,
            "ModelApprovalStatus": status,
        },
    }


def pipeline_execution_status_change(
    pipeline_arn: str, execution_arn: str, status: str, event_id: str, started: str = "2026-11-28T12:00:05Z"
) -> dict:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "SageMaker Model Building Pipeline Execution Status Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "2026-11-28T13:00:00Z",
        "region": REGION,
        "resources": [pipeline_arn, execution_arn],
        "detail": {
            "pipelineExecutionDisplayName": "scheduled-2026-11-28T12-00-00Z",
            "currentPipelineExecutionStatus": status,
            "previousPipelineExecutionStatus": "Executing",
            "executionStartTime": started,
            "executionEndTime": "2026-11-28T12:58:41Z",
            "pipelineExecutionDescription": "",
            "pipelineArn": pipeline_arn,
            "pipelineExecutionArn": execution_arn,
        },
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """What Lambda's SQS event source delivers for messages received from a queue (ReceiveMessage output)."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795867200000",
                    "SenderId": "AROAEXAMPLE:evalstack-trigger",
                    "ApproximateFirstReceiveTimestamp": "1795867200001",
                },
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }
