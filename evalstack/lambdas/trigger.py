"""Continuous-evaluation trigger: resolve the model package, write spec.json, start the pipeline.

Invoked by an EventBridge Scheduler schedule (input built from the ``<aws.scheduler.*>`` context
attributes) or by an EventBridge rule on "SageMaker Model Package State Change". Delivery is
at-least-once, so every request maps to an idempotency token: the schedule ARN plus its scheduled
time, or the model package ARN. The token is the pipeline's ClientRequestToken and names the
evaluation's S3 prefix, whose ``execution.json`` marker makes a redelivered event a no-op; a
``spec.json`` already there (the first attempt died before the marker) is reused as written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import boto3

from .common import idempotency_token, join_uri, log, read_json, require_env, write_text
from .spec import build_spec, spec_json

SCHEDULER_SOURCE = "evalstack.scheduler"
# The schedule target's input (ContinuousEvaluation sets it); Scheduler fills in <aws.scheduler.*>.
SCHEDULER_INPUT = {
    "source": SCHEDULER_SOURCE,
    "schedule_arn": "<aws.scheduler.schedule-arn>",
    "scheduled_time": "<aws.scheduler.scheduled-time>",
    "execution_id": "<aws.scheduler.execution-id>",
    "attempt": "<aws.scheduler.attempt-number>",
}
MODEL_PACKAGE_EVENT = "SageMaker Model Package State Change"
APPROVED = "Approved"
PENDING = "PendingManualApproval"
# The package metadata key naming its base model (evalstack.models.model_package.BASE_MODEL_KEY;
# the Lambda asset cannot import it, tests/test_lambdas_trigger.py checks they agree).
BASE_MODEL_KEY = "evalstack:base_model"
# Reference API service limit: at most 10 evaluations run at once per account.
DEFAULT_MAX_CONCURRENT = 10
_DISPLAY_NAME_CHARS = 82


class ConcurrencyLimitReached(RuntimeError):
    """Raised (not swallowed) so Lambda's async retries try again later and the DLQ keeps the event."""


@dataclass(frozen=True)
class TriggerConfig:
    pipeline_name: str
    model_package_group: str
    output_uri: str
    spec_template: dict[str, Any]
    candidate_statuses: tuple[str, ...]
    concurrency_pipelines: tuple[str, ...]
    max_concurrent: int
    kms_key_id: str | None

    @classmethod
    def from_env(cls) -> TriggerConfig:
        pipeline = require_env("PIPELINE_NAME")
        others = [p for p in os.environ.get("CONCURRENCY_PIPELINES", "").split(",") if p]
        return cls(
            pipeline_name=pipeline,
            model_package_group=require_env("MODEL_PACKAGE_GROUP"),
            output_uri=require_env("OUTPUT_URI"),
            spec_template=json.loads(require_env("SPEC_TEMPLATE")),
            candidate_statuses=tuple(os.environ.get("CANDIDATE_STATUSES", f"{APPROVED},{PENDING}").split(",")),
            concurrency_pipelines=tuple(dict.fromkeys([pipeline, *others])),
            max_concurrent=int(os.environ.get("MAX_CONCURRENT_EVALUATIONS", DEFAULT_MAX_CONCURRENT)),
            kms_key_id=os.environ.get("KMS_KEY_ID") or None,
        )


@dataclass(frozen=True)
class Request:
    """What one event asks for: a stable identity, and the package when the event names one."""

    identity: str
    display_name: str
    model_package_arn: str | None


def _display_name(text: str) -> str:
    # PipelineExecutionDisplayName: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]+", "-", text)).strip("-")
    return cleaned[:_DISPLAY_NAME_CHARS].rstrip("-")


def parse_event(event: dict[str, Any], config: TriggerConfig) -> Request:
    if event.get("source") == SCHEDULER_SOURCE:
        scheduled = event["scheduled_time"]
        return Request(
            identity=f"schedule|{event['schedule_arn']}|{scheduled}",
            display_name=_display_name(f"scheduled-{scheduled}"),
            model_package_arn=None,
        )
    if event.get("source") == "aws.sagemaker" and event.get("detail-type") == MODEL_PACKAGE_EVENT:
        detail = event["detail"]
        if detail.get("ModelPackageGroupName") != config.model_package_group:
            raise ValueError(
                f"event {event.get('id')}: model package group {detail.get('ModelPackageGroupName')!r} "
                f"is not {config.model_package_group!r}"
            )
        arn = detail["ModelPackageArn"]
        return Request(
            identity=f"model-package|{arn}",
            display_name=_display_name(f"package-{config.model_package_group}-{detail['ModelPackageVersion']}"),
            model_package_arn=arn,
        )
    raise ValueError(f"unsupported event: source={event.get('source')!r} detail-type={event.get('detail-type')!r}")


def _packages(sm: Any, group: str, status: str | None = None):
    """Model packages in ``group``, newest first."""
    kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if status:
        kwargs["ModelApprovalStatus"] = status
    for page in sm.get_paginator("list_model_packages").paginate(**kwargs):
        yield from page["ModelPackageSummaryList"]


def latest_package(sm: Any, group: str, statuses: tuple[str, ...], exclude: str | None = None) -> str | None:
    for summary in _packages(sm, group):
        if summary["ModelApprovalStatus"] in statuses and summary["ModelPackageArn"] != exclude:
            return summary["ModelPackageArn"]
    return None


def base_model_for(sm: Any, group: str, candidate: str) -> str | None:
    """The base to compare ``candidate`` with: the newest other Approved package of the group, else
    the reference its own metadata names, else None (the evaluation then runs without the base)."""
    base = latest_package(sm, group, (APPROVED,), exclude=candidate)
    if base is not None:
        return base
    metadata = sm.describe_model_package(ModelPackageName=candidate).get("CustomerMetadataProperties") or {}
    base = metadata.get(BASE_MODEL_KEY)
    if base is None:
        log(
            "trigger.no_base_model",
            model_package_arn=candidate,
            reason=f"no other Approved package in {group} and no {BASE_MODEL_KEY} metadata on the candidate: "
            "evaluate_base_model is set to false for this evaluation",
        )
    return base


def executing_count(sm: Any, pipelines: tuple[str, ...]) -> int:
    # ListPipelineExecutions has no status filter: count the summaries that are still Executing.
    count = 0
    for name in pipelines:
        for page in sm.get_paginator("list_pipeline_executions").paginate(PipelineName=name):
            count += sum(1 for s in page["PipelineExecutionSummaries"] if s["PipelineExecutionStatus"] == "Executing")
    return count


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return start_evaluation(event, TriggerConfig.from_env(), sm=boto3.client("sagemaker"), s3=boto3.client("s3"))


def start_evaluation(event: dict[str, Any], config: TriggerConfig, *, sm: Any, s3: Any) -> dict[str, Any]:
    """Handle one event with the given clients; see the module docstring."""
    request = parse_event(event, config)
    token = idempotency_token(config.pipeline_name, request.identity)
    prefix = join_uri(config.output_uri, config.pipeline_name, token[:32])
    marker_uri = join_uri(prefix, "execution.json")
    log("trigger.received", event_id=event.get("id"), identity=request.identity, token=token)

    marker = read_json(s3, marker_uri)
    if marker is not None:
        log("trigger.duplicate", token=token, pipeline_execution_arn=marker["pipeline_execution_arn"])
        return {"status": "duplicate", **marker}

    spec_uri = join_uri(prefix, "spec.json")
    # A first attempt that died after writing spec.json may already have started the execution that
    # reads it (same token): reuse that spec rather than resolve a possibly newer package.
    spec = read_json(s3, spec_uri)
    if spec is None:
        candidate = request.model_package_arn or latest_package(
            sm, config.model_package_group, config.candidate_statuses
        )
        if candidate is None:
            log("trigger.no_model_package", group=config.model_package_group, statuses=config.candidate_statuses)
            return {"status": "no-model-package", "model_package_group": config.model_package_group}
    else:
        log("trigger.spec_reused", spec_uri=spec_uri, model=spec["model"], base_model=spec["base_model"])

    running = executing_count(sm, config.concurrency_pipelines)
    if running >= config.max_concurrent:
        raise ConcurrencyLimitReached(
            f"{running} evaluations are executing (limit {config.max_concurrent}); retrying later"
        )

    if spec is None:
        wants_base = bool(config.spec_template.get("evaluate_base_model"))
        base = base_model_for(sm, config.model_package_group, candidate) if wants_base else None
        spec = build_spec(
            {**config.spec_template, "evaluate_base_model": base is not None},
            model=candidate,
            base_model=base,
            model_package_group=config.model_package_group,
            kms_key_id=config.kms_key_id,
        )
        write_text(s3, spec_uri, spec_json(spec), config.kms_key_id)
    candidate, base, evaluate_base = spec["model"], spec["base_model"], spec["evaluate_base_model"]
    response = sm.start_pipeline_execution(
        PipelineName=config.pipeline_name,
        PipelineExecutionDisplayName=request.display_name,
        PipelineParameters=[
            {"Name": "SpecUri", "Value": spec_uri},
            {"Name": "OutputPath", "Value": prefix},
            {"Name": "EvaluateBaseModel", "Value": "true" if evaluate_base else "false"},
        ],
        ClientRequestToken=token,
    )
    result = {
        "pipeline_execution_arn": response["PipelineExecutionArn"],
        "model_package_arn": candidate,
        "base_model_package_arn": base,
        "spec_uri": spec_uri,
        "token": token,
    }
    write_text(s3, marker_uri, json.dumps(result, indent=2, sort_keys=True) + "\n", config.kms_key_id)
    log("trigger.started", **result)
    return {"status": "started", **result}
