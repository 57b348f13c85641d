"""Continuous-evaluation trigger: resolve the model package, write spec.json, start the pipeline.

Invoked three ways, each at least once:
- by an EventBridge Scheduler schedule (input built from the ``<aws.scheduler.*>`` context attributes);
- by an EventBridge rule on "SageMaker Model Package State Change";
- by its retry queue (SQS, batch size 1, ReportBatchItemFailures): events refused at the concurrency limit.

Every request maps to an idempotency token: the schedule ARN plus its scheduled time, or the model
package ARN. The token is the pipeline's ClientRequestToken and names the objects under CONTROL_URI,
a prefix only this function may write (the job role may read ``specs/``)::

    specs/<token>/spec.json                  the spec the execution reads
    markers/executions/<execution id>.json   what the approval gate verifies before it acts
    markers/tokens/<token>.json              the same record: a redelivered request is a no-op

Spec and markers are conditional writes (If-None-Match: *), so concurrent duplicates agree on one
spec and one record, and SageMaker returns one execution per ClientRequestToken. A spec that an
earlier attempt wrote is reused as written. Results go under OUTPUT_URI/<pipeline>/<token>/.

Running executions are counted among those created in the last MAX_EXECUTION_HOURS (default 72:
the Evaluate and Report steps run one after the other, each capped at 24 hours by the definition's
MaxRuntimeInSeconds, plus the retry policies' waits), never by paging the whole history. At the
limit the event goes to RETRY_QUEUE_URL with a delay that doubles per attempt, up to SQS's 15
minutes, and the handler returns normally: the evaluation runs later and is never dropped.

An event the trigger cannot use is logged as one ``trigger.invalid_event`` error line and dropped;
AWS errors are raised (Lambda retries, then the DLQ keeps the event).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .common import (
    MODEL_PACKAGE_ARN,
    InvalidEvent,
    env_list,
    event_id,
    execution_marker_uri,
    idempotency_token,
    invalid_event,
    join_uri,
    log,
    log_error,
    parse_json,
    pipeline_execution_parts,
    put_if_absent,
    read_json,
    read_object,
    require,
    require_env,
    sha256_hex,
    shown,
    spec_uri,
    token_marker_uri,
    utc_time,
)
from .spec import build_spec, spec_json, template_sha256

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
# A package a person approved is never re-evaluated by default (the gate would not touch it anyway).
DEFAULT_CANDIDATE_STATUSES = PENDING
# The package metadata key naming its base model (evalstack.models.model_package.BASE_MODEL_KEY;
# the Lambda asset cannot import it, tests/test_lambdas_trigger.py checks they agree).
BASE_MODEL_KEY = "evalstack:base_model"
# Reference API service limit: at most 10 evaluations run at once per account.
DEFAULT_MAX_CONCURRENT = 10
DEFAULT_MAX_EXECUTION_HOURS = 72.0
RUNNING_STATUSES = ("Executing", "Stopping")
DEFAULT_RETRY_DELAY_SECONDS = 120
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit
# S3 lowercases user metadata keys: the template digest a spec was built from travels with it.
TEMPLATE_METADATA = "template-sha256"
_DISPLAY_NAME_CHARS = 82
_SCHEDULE_ARN = re.compile(r"^arn:aws[a-z-]*:scheduler:[a-z0-9-]+:\d{12}:schedule/[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class TriggerConfig:
    pipeline_name: str
    model_package_group: str
    output_uri: str
    control_uri: str
    spec_template: dict[str, Any]
    template_sha256: str
    candidate_statuses: tuple[str, ...]
    concurrency_pipelines: tuple[str, ...]
    max_concurrent: int
    max_execution_hours: float
    retry_queue_url: str
    retry_delay_seconds: int
    kms_key_id: str | None

    @classmethod
    def from_env(cls) -> TriggerConfig:
        pipeline = require_env("PIPELINE_NAME")
        text = require_env("SPEC_TEMPLATE")
        digest = template_sha256(text)
        template = json.loads(text)
        if not isinstance(template, dict):
            raise ValueError("SPEC_TEMPLATE: expected a JSON object")
        return cls(
            pipeline_name=pipeline,
            model_package_group=require_env("MODEL_PACKAGE_GROUP"),
            output_uri=require_env("OUTPUT_URI"),
            control_uri=require_env("CONTROL_URI"),
            spec_template=template,
            template_sha256=digest,
            candidate_statuses=env_list("CANDIDATE_STATUSES", DEFAULT_CANDIDATE_STATUSES),
            concurrency_pipelines=tuple(dict.fromkeys([pipeline, *env_list("CONCURRENCY_PIPELINES", "")])),
            max_concurrent=int(os.environ.get("MAX_CONCURRENT_EVALUATIONS", DEFAULT_MAX_CONCURRENT)),
            max_execution_hours=float(os.environ.get("MAX_EXECUTION_HOURS", DEFAULT_MAX_EXECUTION_HOURS)),
            retry_queue_url=require_env("RETRY_QUEUE_URL"),
            retry_delay_seconds=int(os.environ.get("RETRY_DELAY_SECONDS", DEFAULT_RETRY_DELAY_SECONDS)),
            kms_key_id=os.environ.get("KMS_KEY_ID") or None,
        )


@dataclass(frozen=True)
class Clients:
    sm: Any
    s3: Any
    sqs: Any


@dataclass(frozen=True)
class Request:
    """What one event asks for: a stable identity, and the package when the event names one."""

    identity: str
    display_name: str
    model_package_arn: str | None


@dataclass(frozen=True)
class Marker:
    """What the trigger records for each execution it starts; the approval gate verifies it."""

    pipeline_execution_arn: str
    pipeline_name: str
    model_package_arn: str
    model_package_group: str
    base_model_package_arn: str | None
    spec_uri: str
    spec_sha256: str
    template_sha256: str
    output_path: str
    token: str


def _display_name(text: str) -> str:
    # PipelineExecutionDisplayName: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]+", "-", text)).strip("-")
    return cleaned[:_DISPLAY_NAME_CHARS].rstrip("-")


def parse_event(event: Any, config: TriggerConfig) -> Request:
    """The request a schedule or model package event makes; InvalidEvent for anything else."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"event: expected an object, got {type(event).__name__}")
    if event.get("source") == SCHEDULER_SOURCE:
        schedule = require(event, "schedule_arn", str, "event")
        if not _SCHEDULE_ARN.match(schedule):
            raise InvalidEvent(f"event.schedule_arn: not a schedule ARN: {shown(schedule)}")
        scheduled = require(event, "scheduled_time", str, "event")
        utc_time(scheduled, "event.scheduled_time")
        return Request(
            identity=f"schedule|{schedule}|{scheduled}",
            display_name=_display_name(f"scheduled-{scheduled}"),
            model_package_arn=None,
        )
    if event.get("source") == "aws.sagemaker" and event.get("detail-type") == MODEL_PACKAGE_EVENT:
        detail = require(event, "detail", dict, "event")
        group = require(detail, "ModelPackageGroupName", str, "event.detail")
        if group != config.model_package_group:
            wanted = config.model_package_group
            raise InvalidEvent(f"event.detail.ModelPackageGroupName: {shown(group)} is not {wanted!r}")
        arn = require(detail, "ModelPackageArn", str, "event.detail")
        match = MODEL_PACKAGE_ARN.match(arn)
        # Package ARNs carry the group name in lower case.
        if match is None or match.group(1) != group.lower():
            raise InvalidEvent(f"event.detail.ModelPackageArn: not a package of {group}: {shown(arn)}")
        version = require(detail, "ModelPackageVersion", int, "event.detail")
        return Request(
            identity=f"model-package|{arn}",
            display_name=_display_name(f"package-{group}-{version}"),
            model_package_arn=arn,
        )
    raise InvalidEvent(
        f"unsupported event: source={shown(event.get('source'))} detail-type={shown(event.get('detail-type'))}"
    )


def _packages(sm: Any, group: str):
    """Model packages in ``group``, newest first."""
    paginator = sm.get_paginator("list_model_packages")
    for page in paginator.paginate(ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"):
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


def running_count(sm: Any, pipelines: tuple[str, ...], created_after: datetime) -> int:
    # ListPipelineExecutions has no status filter: count the recent summaries that still run.
    count = 0
    for name in pipelines:
        paginator = sm.get_paginator("list_pipeline_executions")
        for page in paginator.paginate(
            PipelineName=name, CreatedAfter=created_after, SortBy="CreationTime", SortOrder="Descending"
        ):
            summaries = page["PipelineExecutionSummaries"]
            count += sum(1 for s in summaries if s["PipelineExecutionStatus"] in RUNNING_STATUSES)
    return count


def retry_delay(attempt: int, base_seconds: int) -> int:
    """SQS DelaySeconds before attempt ``attempt + 1``: doubling from ``base_seconds``, at most 15 minutes."""
    return min(MAX_DELAY_SECONDS, base_seconds * 2 ** min(attempt - 1, 10))


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    config = TriggerConfig.from_env()
    clients = Clients(sm=boto3.client("sagemaker"), s3=boto3.client("s3"), sqs=boto3.client("sqs"))
    if isinstance(event, dict) and "Records" in event:
        return handle_retries(event, config, clients)
    return start_evaluation(event, config, clients)


def _retried_event(record: Any) -> tuple[dict[str, Any], int]:
    """The original event and its attempt number from a retry queue record."""
    if require(record, "eventSource", str, "record") != "aws:sqs":
        raise InvalidEvent(f"record.eventSource: expected 'aws:sqs', got {shown(record['eventSource'])}")
    require(record, "messageId", str, "record")
    body = require(record, "body", str, "record")
    try:
        message = json.loads(body)
    except ValueError as err:
        raise InvalidEvent(f"record.body: not JSON ({err})") from err
    if isinstance(message, dict) and "event" not in message:
        # A bare event: a DLQ message moved back to this queue (docs/operations.md, redrive).
        event, attempt = message, 1
    else:
        event = require(message, "event", dict, "record.body")
        attempt = require(message, "attempt", int, "record.body")
        if attempt < 1:
            raise InvalidEvent(f"record.body.attempt: expected a positive integer, got {attempt}")
    if "Records" in event:
        raise InvalidEvent("record.body.event: a batch inside a batch")
    return event, attempt


def handle_retries(event: dict[str, Any], config: TriggerConfig, clients: Clients) -> dict[str, Any]:
    """An SQS batch from the retry queue; records that failed on an AWS error are returned for redelivery."""
    records = event["Records"]
    if not isinstance(records, list):
        return invalid_event("trigger", InvalidEvent("event.Records: expected a list"), None)
    failures = []
    for record in records:
        message_id = event_id(record, "messageId")
        try:
            original, attempt = _retried_event(record)
        except InvalidEvent as err:
            invalid_event("trigger", err, message_id)
            continue
        try:
            start_evaluation(original, config, clients, attempt=attempt)
        except (ClientError, BotoCoreError) as err:
            # Transient: SQS redelivers the record after its visibility timeout, then the DLQ keeps it.
            log_error("trigger.retry_failed", message_id=message_id, error=shown(str(err)))
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


def _defer(event: dict[str, Any], config: TriggerConfig, sqs: Any, attempt: int, running: int) -> dict[str, Any]:
    delay = retry_delay(attempt, config.retry_delay_seconds)
    sqs.send_message(
        QueueUrl=config.retry_queue_url,
        MessageBody=json.dumps({"event": event, "attempt": attempt + 1}, sort_keys=True),
        DelaySeconds=delay,
    )
    outcome = {"running": running, "limit": config.max_concurrent, "attempt": attempt + 1, "delay_seconds": delay}
    log("trigger.deferred", **outcome)
    return {"status": "deferred", **outcome}


def _candidate(request: Request, config: TriggerConfig, sm: Any) -> str | None:
    """The package to evaluate: the event's, while it is still a candidate; else the group's newest."""
    if request.model_package_arn is None:
        return latest_package(sm, config.model_package_group, config.candidate_statuses)
    status = sm.describe_model_package(ModelPackageName=request.model_package_arn)["ModelApprovalStatus"]
    if status not in config.candidate_statuses:
        log("trigger.not_a_candidate", model_package_arn=request.model_package_arn, approval_status=status)
        return None
    return request.model_package_arn


def _new_spec(config: TriggerConfig, sm: Any, candidate: str) -> str:
    wants_base = bool(config.spec_template.get("evaluate_base_model"))
    base = base_model_for(sm, config.model_package_group, candidate) if wants_base else None
    return spec_json(
        build_spec(
            {**config.spec_template, "evaluate_base_model": base is not None},
            model=candidate,
            base_model=base,
            model_package_group=config.model_package_group,
            kms_key_id=config.kms_key_id,
        )
    )


def start_evaluation(event: Any, config: TriggerConfig, clients: Clients, attempt: int = 1) -> dict[str, Any]:
    """Handle one schedule or model package event; see the module docstring."""
    try:
        request = parse_event(event, config)
    except InvalidEvent as err:
        return invalid_event("trigger", err, event_id(event))
    token = idempotency_token(config.pipeline_name, request.identity)
    log("trigger.received", event_id=event_id(event), identity=request.identity, token=token, attempt=attempt)

    recorded = read_json(clients.s3, token_marker_uri(config.control_uri, token))
    if recorded is not None:
        log("trigger.duplicate", token=token, pipeline_execution_arn=recorded["pipeline_execution_arn"])
        return {"status": "duplicate", **recorded}

    created_after = datetime.now(UTC) - timedelta(hours=config.max_execution_hours)
    running = running_count(clients.sm, config.concurrency_pipelines, created_after)
    if running >= config.max_concurrent:
        return _defer(event, config, clients.sqs, attempt, running)

    uri = spec_uri(config.control_uri, token)
    stored = read_object(clients.s3, uri)
    if stored is not None:
        # An earlier attempt wrote it and may have started the execution that reads it: reuse it as
        # written rather than resolve a possibly newer package (SageMaker returns that execution).
        log("trigger.spec_reused", spec_uri=uri)
        body, template_digest = stored.body, stored.metadata.get(TEMPLATE_METADATA, "")
    else:
        candidate = _candidate(request, config, clients.sm)
        if candidate is None:
            log("trigger.no_candidate", group=config.model_package_group, statuses=config.candidate_statuses)
            return {"status": "no-candidate", "model_package_group": config.model_package_group}
        text = _new_spec(config, clients.sm, candidate)
        if not put_if_absent(clients.s3, uri, text, config.kms_key_id, {TEMPLATE_METADATA: config.template_sha256}):
            # Another delivery of this request wrote the spec between our read and our write: it is
            # running now and starts the execution (should it die, its own retry reuses the spec).
            log("trigger.in_flight", token=token, spec_uri=uri)
            return {"status": "duplicate", "token": token, "spec_uri": uri}
        body, template_digest = text.encode("utf-8"), config.template_sha256
    spec = parse_json(body, uri)
    output_path = join_uri(config.output_uri, config.pipeline_name, token)
    response = clients.sm.start_pipeline_execution(
        PipelineName=config.pipeline_name,
        PipelineExecutionDisplayName=request.display_name,
        PipelineParameters=[
            {"Name": "SpecUri", "Value": uri},
            {"Name": "OutputPath", "Value": output_path},
            {"Name": "EvaluateBaseModel", "Value": "true" if spec["evaluate_base_model"] else "false"},
        ],
        ClientRequestToken=token,
    )
    execution_arn = response["PipelineExecutionArn"]
    marker = Marker(
        pipeline_execution_arn=execution_arn,
        pipeline_name=config.pipeline_name,
        model_package_arn=spec["model"],
        model_package_group=config.model_package_group,
        base_model_package_arn=spec["base_model"],
        spec_uri=uri,
        spec_sha256=sha256_hex(body),
        template_sha256=template_digest,
        output_path=output_path,
        token=token,
    )
    text = json.dumps(asdict(marker), indent=2, sort_keys=True) + "\n"
    _, execution_id = pipeline_execution_parts(execution_arn, "StartPipelineExecution.PipelineExecutionArn")
    # The execution's marker first: the token marker says "done", and a retry must find both.
    put_if_absent(clients.s3, execution_marker_uri(config.control_uri, execution_id), text, config.kms_key_id)
    if not put_if_absent(clients.s3, token_marker_uri(config.control_uri, token), text, config.kms_key_id):
        recorded = read_json(clients.s3, token_marker_uri(config.control_uri, token))
        log("trigger.duplicate", token=token, pipeline_execution_arn=recorded["pipeline_execution_arn"])
        return {"status": "duplicate", **recorded}
    log("trigger.started", **asdict(marker))
    return {"status": "started", **asdict(marker)}
