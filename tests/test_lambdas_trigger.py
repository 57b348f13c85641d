"""Continuous-evaluation trigger against moto in server mode (S3, KMS, SQS, SageMaker pipelines and
model packages), with real Scheduler, EventBridge and SQS event shapes. Counting running executions
uses a Stubber (moto reports every execution as Succeeded at once), validated against the SageMaker
service model."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from evalstack.lambdas import trigger
from evalstack.lambdas.spec import template_sha256
from evalstack.models.model_package import BASE_MODEL_KEY
from evalstack.spec import EvaluationSpec
from tests.support.eventbridge import model_package_state_change, scheduler_invocation
from tests.support.lambda_platform import TEMPLATE, Platform, split


@pytest.fixture
def platform(aws: str, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return Platform.create(monkeypatch)


def _clients(sm: Any = None) -> trigger.Clients:
    return trigger.Clients(sm=sm or boto3.client("sagemaker"), s3=boto3.client("s3"), sqs=boto3.client("sqs"))


def _running(count: int, pipeline: str) -> dict[str, Any]:
    return {
        "PipelineExecutionSummaries": [
            {
                "PipelineExecutionArn": f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline}/execution/e{i}",
                "PipelineExecutionStatus": "Executing" if i % 2 else "Stopping",
            }
            for i in range(count)
        ]
    }


def _count_request(pipeline: str, created_after: Any = ANY) -> dict[str, Any]:
    return {
        "PipelineName": pipeline,
        "CreatedAfter": created_after,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
    }


def _busy(stub: Stubber, pipeline: str, running: int) -> None:
    """The next ListPipelineExecutions answers ``running`` executions that still run."""
    stub.add_response("list_pipeline_executions", _running(running, pipeline), _count_request(pipeline))


def test_schedule_evaluates_newest_pending_package_once_per_scheduled_time(platform: Platform) -> None:
    approved, pending, _rejected = platform.packages("Approved", "PendingManualApproval", "Rejected")
    first = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))

    assert first["status"] == "started"
    assert (first["model_package_arn"], first["base_model_package_arn"]) == (pending, approved)
    token = first["token"]
    spec_uri = f"{platform.control_uri}/specs/{token}/spec.json"
    output_path = f"s3://{platform.bucket}/evaluations/{platform.pipeline}/{token}"
    assert platform.parameters(first["pipeline_execution_arn"]) == {
        "SpecUri": spec_uri,
        "OutputPath": output_path,
        "EvaluateBaseModel": "true",
    }
    spec_bytes = platform.read(spec_uri)
    spec = EvaluationSpec.from_json(spec_bytes.decode(), source=spec_uri)
    assert (spec.model, spec.base_model, spec.benchmark, spec.subtasks) == (pending, approved, "MMLU", ["anatomy"])
    assert (spec.model_package_group, spec.kms_key_id) == (platform.group, platform.key_arn)

    # The marker the gate verifies, under the execution id and under the token; both SSE-KMS.
    execution_id = first["pipeline_execution_arn"].rsplit("/", 1)[-1]
    control = f"control/{platform.pipeline}"
    assert platform.keys(control) == sorted(
        [f"{control}/specs/{token}/spec.json", f"{control}/markers/executions/{execution_id}.json",
         f"{control}/markers/tokens/{token}.json"]
    )  # fmt: skip
    marker = json.loads(platform.read(f"{platform.control_uri}/markers/executions/{execution_id}.json"))
    assert marker == json.loads(platform.read(f"{platform.control_uri}/markers/tokens/{token}.json"))
    assert marker == {
        "pipeline_execution_arn": first["pipeline_execution_arn"],
        "pipeline_name": platform.pipeline,
        "model_package_arn": pending,
        "model_package_group": platform.group,
        "base_model_package_arn": approved,
        "spec_uri": spec_uri,
        "spec_sha256": hashlib.sha256(spec_bytes).hexdigest(),
        "template_sha256": template_sha256(json.dumps(TEMPLATE)),
        "output_path": output_path,
        "token": token,
    }
    for key in platform.keys(control):
        assert boto3.client("s3").head_object(Bucket=platform.bucket, Key=key)["ServerSideEncryption"] == "aws:kms"

    # Scheduler retries and Lambda's at-least-once delivery re-send the same scheduled time.
    again = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z", attempt=2))
    assert (again["status"], again["pipeline_execution_arn"]) == ("duplicate", first["pipeline_execution_arn"])
    assert len(platform.executions()) == 1

    next_night = trigger.handler(scheduler_invocation("nightly", "2026-11-29T02:00:00Z"))
    assert next_night["status"] == "started"
    assert next_night["token"] != token
    assert len(platform.executions()) == 2


def test_schedule_never_picks_a_package_a_person_approved_by_default(platform: Platform) -> None:
    (approved,) = platform.packages("PendingManualApproval")
    platform.approve_by_hand(approved)

    result = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))

    assert result == {"status": "no-candidate", "model_package_group": platform.group}
    assert platform.executions() == []
    assert platform.keys() == []


def test_registered_package_event_evaluates_that_package_once(platform: Platform) -> None:
    approved, pending = platform.packages("Approved", "PendingManualApproval")
    event = model_package_state_change(pending, platform.group, 2, "PendingManualApproval", "e-1")

    first = trigger.handler(event)
    duplicate = trigger.handler({**event, "id": "e-1-redelivered"})

    assert (first["status"], first["model_package_arn"], first["base_model_package_arn"]) == (
        "started",
        pending,
        approved,
    )
    assert duplicate["status"] == "duplicate"
    assert [e["PipelineExecutionArn"] for e in platform.executions()] == [first["pipeline_execution_arn"]]
    assert platform.executions()[0]["PipelineExecutionDisplayName"] == f"package-{platform.group}-2"


def test_package_approved_by_a_person_before_its_event_was_handled_is_not_evaluated(platform: Platform) -> None:
    (package,) = platform.packages("PendingManualApproval")
    event = model_package_state_change(package, platform.group, 1, "PendingManualApproval", "e-1")
    platform.approve_by_hand(package)  # the event arrives (or is retried) after a person decided

    assert trigger.handler(event)["status"] == "no-candidate"
    assert platform.executions() == []


def test_empty_group_starts_nothing(platform: Platform) -> None:
    result = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))
    assert result == {"status": "no-candidate", "model_package_group": platform.group}
    assert platform.executions() == []


def test_eleventh_scheduled_evaluation_runs_later_instead_of_being_lost(platform: Platform) -> None:
    (package,) = platform.packages("PendingManualApproval")
    event = scheduler_invocation("nightly", "2026-11-28T02:00:00Z")
    config = trigger.TriggerConfig.from_env()
    busy = boto3.client("sagemaker")
    with Stubber(busy) as stub:
        # Ten evaluations run: the scheduled one is refused twice (the second time from the queue) ...
        _busy(stub, platform.pipeline, 10)
        deferred = trigger.start_evaluation(event, config, _clients(busy))
        assert deferred == {"status": "deferred", "running": 10, "limit": 10, "attempt": 2, "delay_seconds": 0}

        retry = platform.retry_event()
        (record,) = retry["Records"]
        assert json.loads(record["body"]) == {"event": event, "attempt": 2}
        _busy(stub, platform.pipeline, 11)
        assert trigger.handle_retries(retry, config, _clients(busy)) == {"batchItemFailures": []}
        stub.assert_no_pending_responses()
    # ... nothing was written and nothing started meanwhile ...
    assert (platform.keys(), platform.executions()) == ([], [])

    # ... and once capacity frees, the queued event starts the evaluation of that scheduled time.
    retry = platform.retry_event()
    assert json.loads(retry["Records"][0]["body"])["attempt"] == 3
    assert trigger.handler(retry) == {"batchItemFailures": []}

    (execution,) = platform.executions()
    direct = trigger.handler(event)  # the scheduled time's token did not change on the way
    assert (direct["status"], direct["pipeline_execution_arn"]) == ("duplicate", execution["PipelineExecutionArn"])
    assert direct["model_package_arn"] == package
    assert platform.retry_queue_depth() == {"visible": 0, "delayed": 0}


def test_running_executions_are_counted_since_the_longest_execution_could_have_started(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_EXECUTION_HOURS", "30")
    monkeypatch.setenv("CONCURRENCY_PIPELINES", "other-pipeline")
    config = trigger.TriggerConfig.from_env()
    before = datetime.now(UTC) - timedelta(hours=30)

    class Within:
        """Equal to a CreatedAfter between ``before`` and 30 hours before the check."""

        def __eq__(self, value: object) -> bool:
            return isinstance(value, datetime) and before <= value <= datetime.now(UTC) - timedelta(hours=30)

    sm = boto3.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("list_pipeline_executions", _running(6, platform.pipeline),
                          _count_request(platform.pipeline, Within()))  # fmt: skip
        stub.add_response("list_pipeline_executions", _running(4, "other-pipeline"),
                          _count_request("other-pipeline", Within()))  # fmt: skip
        result = trigger.start_evaluation(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"), config, _clients(sm))
        stub.assert_no_pending_responses()
    assert (result["status"], result["running"]) == ("deferred", 10)


def test_retry_delay_doubles_up_to_the_sqs_limit() -> None:
    assert [trigger.retry_delay(n, 120) for n in range(1, 7)] == [120, 240, 480, 900, 900, 900]
    assert trigger.retry_delay(10_000, 120) == 900


def test_deferred_event_waits_in_the_queue_for_its_delay(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRY_DELAY_SECONDS")
    platform.packages("PendingManualApproval")
    sm = boto3.client("sagemaker")
    with Stubber(sm) as stub:
        _busy(stub, platform.pipeline, 10)
        result = trigger.start_evaluation(
            scheduler_invocation("nightly", "2026-11-28T02:00:00Z"), trigger.TriggerConfig.from_env(), _clients(sm)
        )
    assert result["delay_seconds"] == trigger.DEFAULT_RETRY_DELAY_SECONDS
    assert platform.retry_queue_depth() == {"visible": 0, "delayed": 1}


def test_retry_record_that_meets_an_aws_error_is_returned_for_redelivery(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.packages("PendingManualApproval")
    sm = boto3.client("sagemaker")
    with Stubber(sm) as stub:
        _busy(stub, platform.pipeline, 10)
        trigger.start_evaluation(
            scheduler_invocation("nightly", "2026-11-28T02:00:00Z"), trigger.TriggerConfig.from_env(), _clients(sm)
        )
    retry = platform.retry_event()
    monkeypatch.setenv("CONTROL_URI", "s3://evalstack-no-such-bucket/control")

    result = trigger.handler(retry)

    assert result == {"batchItemFailures": [{"itemIdentifier": retry["Records"][0]["messageId"]}]}
    assert platform.executions() == []


def test_first_package_of_a_group_takes_its_base_from_its_metadata(platform: Platform) -> None:
    base = "bedrock:meta.llama3-8b-instruct-v1:0"
    (package,) = platform.packages("PendingManualApproval", metadata={BASE_MODEL_KEY: base})

    result = platform.evaluate(package)

    assert (result["model_package_arn"], result["base_model_package_arn"]) == (package, base)
    spec = EvaluationSpec.from_json(platform.read(result["spec_uri"]).decode(), source=result["spec_uri"])
    assert (spec.model, spec.base_model, spec.evaluate_base_model) == (package, base, True)
    assert platform.parameters(result["pipeline_execution_arn"])["EvaluateBaseModel"] == "true"


def test_first_package_without_base_metadata_is_evaluated_alone(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    (package,) = platform.packages("PendingManualApproval")

    with caplog.at_level("INFO", logger="evalstack"):
        result = platform.evaluate(package)

    assert result["base_model_package_arn"] is None
    spec = EvaluationSpec.from_json(platform.read(result["spec_uri"]).decode(), source=result["spec_uri"])
    assert (spec.base_model, spec.evaluate_base_model) == (None, False)
    assert platform.parameters(result["pipeline_execution_arn"])["EvaluateBaseModel"] == "false"
    (why,) = [r.evalstack for r in caplog.records if r.getMessage() == "trigger.no_base_model"]
    assert why["model_package_arn"] == package
    assert BASE_MODEL_KEY in why["reason"]


def test_trigger_reads_the_base_model_key_the_model_layer_writes() -> None:
    assert trigger.BASE_MODEL_KEY == BASE_MODEL_KEY


def test_redelivery_after_spec_was_written_reuses_that_spec(platform: Platform) -> None:
    approved, pending = platform.packages("Approved", "PendingManualApproval")
    first = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))
    written = platform.read(first["spec_uri"])
    # The first attempt died after StartPipelineExecution, before it wrote the markers ...
    s3 = boto3.client("s3")
    for key in platform.keys(f"control/{platform.pipeline}/markers/"):
        s3.delete_object(Bucket=platform.bucket, Key=key)
    # ... and a newer package was registered before the event came again.
    platform.packages("PendingManualApproval")

    again = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z", attempt=2))

    assert (again["status"], again["token"], again["spec_uri"]) == ("started", first["token"], first["spec_uri"])
    assert (again["model_package_arn"], again["base_model_package_arn"]) == (pending, approved)
    assert (again["spec_sha256"], again["template_sha256"]) == (first["spec_sha256"], first["template_sha256"])
    assert platform.read(first["spec_uri"]) == written
    # SageMaker returns the first execution for the same ClientRequestToken (moto starts another);
    # either way the execution reads the spec the first attempt wrote.
    assert platform.parameters(again["pipeline_execution_arn"]) == platform.parameters(first["pipeline_execution_arn"])


def test_reused_spec_keeps_the_digest_of_the_template_it_was_built_from(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.packages("PendingManualApproval")
    first = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))
    s3 = boto3.client("s3")
    for key in platform.keys(f"control/{platform.pipeline}/markers/"):
        s3.delete_object(Bucket=platform.bucket, Key=key)
    monkeypatch.setenv("SPEC_TEMPLATE", json.dumps({**TEMPLATE, "subtasks": ["virology"]}))  # a redeploy

    again = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z", attempt=2))

    # The marker records what the spec was built from, so the gate refuses it under the new template.
    assert again["template_sha256"] == first["template_sha256"] == template_sha256(json.dumps(TEMPLATE))


def _hook(client: Any, operation: str, action: Any) -> None:
    """Run ``action`` once, just before ``client`` sends its first ``operation`` request."""
    done: list[bool] = []

    def before(**_: Any) -> None:
        if not done:
            done.append(True)
            action()

    client.meta.events.register(f"before-call.{client.meta.service_model.service_name}.{operation}", before)


def test_concurrent_duplicate_before_the_spec_is_written_starts_nothing(platform: Platform) -> None:
    """Delivery B runs completely while delivery A is between reading and writing the spec."""
    platform.packages("PendingManualApproval")
    event = scheduler_invocation("nightly", "2026-11-28T02:00:00Z")
    config, a = trigger.TriggerConfig.from_env(), _clients()
    outcomes: list[dict[str, Any]] = []
    _hook(a.s3, "PutObject", lambda: outcomes.append(trigger.start_evaluation(event, config, _clients())))

    outcome_a = trigger.start_evaluation(event, config, a)

    (outcome_b,) = outcomes
    assert (outcome_b["status"], outcome_a["status"]) == ("started", "duplicate")
    assert outcome_a["spec_uri"] == outcome_b["spec_uri"]
    assert [e["PipelineExecutionArn"] for e in platform.executions()] == [outcome_b["pipeline_execution_arn"]]


def test_concurrent_duplicate_after_the_spec_is_written_records_one_execution(platform: Platform) -> None:
    """Delivery B runs completely while delivery A is between writing the spec and starting."""
    platform.packages("PendingManualApproval")
    event = scheduler_invocation("nightly", "2026-11-28T02:00:00Z")
    config, a, b = trigger.TriggerConfig.from_env(), _clients(), _clients()
    tokens: list[str] = []
    for clients in (a, b):
        clients.sm.meta.events.register(
            "before-parameter-build.sagemaker.StartPipelineExecution",
            lambda params, **_: tokens.append(params["ClientRequestToken"]),
        )
    outcomes: list[dict[str, Any]] = []
    _hook(a.sm, "StartPipelineExecution", lambda: outcomes.append(trigger.start_evaluation(event, config, b)))

    outcome_a = trigger.start_evaluation(event, config, a)

    (outcome_b,) = outcomes
    # Both started with one ClientRequestToken, which SageMaker turns into one execution (moto does
    # not, so it lists two); both answers and the token marker name the first one recorded.
    assert len(tokens) == 2 and len(set(tokens)) == 1
    assert (outcome_b["status"], outcome_a["status"]) == ("started", "duplicate")
    assert outcome_a["pipeline_execution_arn"] == outcome_b["pipeline_execution_arn"]
    bucket, key = split(f"{platform.control_uri}/markers/tokens/{outcome_b['token']}.json")
    marker = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert marker["pipeline_execution_arn"] == outcome_b["pipeline_execution_arn"]


def test_dead_letter_message_moved_back_to_the_retry_queue_starts_the_evaluation(platform: Platform) -> None:
    """The documented redrive: StartMessageMoveTask from the DLQ to the retry queue, bodies unchanged."""
    (package,) = platform.packages("PendingManualApproval")
    event = model_package_state_change(package, platform.group, 1, "PendingManualApproval", "e-1")
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=platform.retry_queue_url, MessageBody=json.dumps(event))  # Lambda's DLQ body

    assert trigger.handler(platform.retry_event()) == {"batchItemFailures": []}

    (execution,) = platform.executions()
    assert platform.parameters(execution["PipelineExecutionArn"])["SpecUri"].startswith(platform.control_uri)
