"""Hostile events and forged or broken state for both handlers, against moto in server mode.

Every unusable event gives exactly one structured ``<handler>.invalid_event`` error line and a normal
return (so Lambda does not retry it into the DLQ), and changes nothing: no execution, no object
written, no message queued, no package touched. Every forged marker or spec and every broken result
leaves the package untouched and is reported on SNS with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from evalstack.lambdas import approval, trigger
from tests.support.eventbridge import model_package_state_change, scheduler_invocation
from tests.support.lambda_platform import PASSING, PASSING_COMPARISON, Platform

PENDING = "PendingManualApproval"
SCHEDULE = scheduler_invocation("nightly", "2026-11-28T02:00:00Z")
Build = Callable[[Platform, str], Any]


@pytest.fixture
def platform(aws: str, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return Platform.create(monkeypatch)


def _errors(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    return [(r.getMessage(), r.evalstack) for r in caplog.records if r.name == "evalstack" and r.levelname == "ERROR"]


def _package_event(platform: Platform, package: str, **detail: Any) -> dict[str, Any]:
    event = model_package_state_change(package, platform.group, 1, PENDING, "e-1")
    event["detail"].update(detail)
    return event


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _retry(body: Any) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    record = {"messageId": "m-1", "receiptHandle": "r", "body": text, "eventSource": "aws:sqs",
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:retries", "awsRegion": "us-east-1"}  # fmt: skip
    return {"Records": [record]}


TRIGGER_EVENTS: dict[str, tuple[Build, str]] = {
    "none": (lambda p, a: None, "event: expected an object, got NoneType"),
    "list": (lambda p, a: [SCHEDULE], "event: expected an object, got list"),
    "string": (lambda p, a: "nightly", "event: expected an object, got str"),
    "number": (lambda p, a: 42, "event: expected an object, got int"),
    "empty": (lambda p, a: {}, "unsupported event: source=None detail-type=None"),
    "other source": (lambda p, a: {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"},
                     "unsupported event: source='aws.ec2'"),
    "no schedule arn": (lambda p, a: _without(SCHEDULE, "schedule_arn"), r"event.schedule_arn: missing"),
    "null schedule arn": (lambda p, a: {**SCHEDULE, "schedule_arn": None},
                          "event.schedule_arn: expected a non-empty str, got None"),
    "schedule arn not an arn": (lambda p, a: {**SCHEDULE, "schedule_arn": "nightly"}, "not a schedule ARN: 'nightly'"),
    "unfilled placeholder": (lambda p, a: trigger.SCHEDULER_INPUT, "event.schedule_arn: not a schedule ARN"),
    "no scheduled time": (lambda p, a: _without(SCHEDULE, "scheduled_time"), "event.scheduled_time: missing"),
    "scheduled time not a time": (lambda p, a: {**SCHEDULE, "scheduled_time": "yesterday"},
                                  "event.scheduled_time: expected an ISO 8601 time"),
    "scheduled time a number": (lambda p, a: {**SCHEDULE, "scheduled_time": 1795867200},
                                "event.scheduled_time: expected a non-empty str, got 1795867200"),
    "scheduled time without offset": (lambda p, a: {**SCHEDULE, "scheduled_time": "2026-11-28T02:00:00"},
                                      "with a UTC offset, got '2026-11-28T02:00:00'"),
    "null detail": (lambda p, a: {**_package_event(p, a), "detail": None},
                    "event.detail: expected a non-empty dict, got None"),
    "list detail": (lambda p, a: {**_package_event(p, a), "detail": []}, "event.detail: expected a non-empty dict"),
    "no detail": (lambda p, a: _without(_package_event(p, a), "detail"), "event.detail: missing"),
    "no package arn": (lambda p, a: {**_package_event(p, a), "detail": _without(_package_event(p, a)["detail"],
                                                                                 "ModelPackageArn")},
                       "event.detail.ModelPackageArn: missing"),
    "package arn not an arn": (lambda p, a: _package_event(p, a, ModelPackageArn="model-7"),
                               "event.detail.ModelPackageArn: not a package of"),
    "package of another group in the arn": (
        lambda p, a: _package_event(p, a, ModelPackageArn=a.replace(p.group, "other-group")),
        "event.detail.ModelPackageArn: not a package of"),
    "event of another group": (lambda p, a: _package_event(p, a, ModelPackageGroupName="other-group"),
                               "event.detail.ModelPackageGroupName: 'other-group' is not"),
    "group not a string": (lambda p, a: _package_event(p, a, ModelPackageGroupName=7),
                           "event.detail.ModelPackageGroupName: expected a non-empty str, got 7"),
    "version a string": (lambda p, a: _package_event(p, a, ModelPackageVersion="1"),
                         "event.detail.ModelPackageVersion: expected a non-empty int, got '1'"),
    "version a bool": (lambda p, a: _package_event(p, a, ModelPackageVersion=True),
                       "event.detail.ModelPackageVersion: expected a non-empty int, got True"),
}  # fmt: skip

RETRY_RECORDS: dict[str, tuple[Build, str]] = {
    "records not a list": (lambda p, a: {"Records": "x"}, "event.Records: expected a list"),
    "record not an object": (lambda p, a: {"Records": [None]}, "record: expected an object, got NoneType"),
    "record from sns": (lambda p, a: {"Records": [{**_retry({})["Records"][0], "eventSource": "aws:sns"}]},
                        "record.eventSource: expected 'aws:sqs', got 'aws:sns'"),
    "body not json": (lambda p, a: _retry("{not json"), "record.body: not JSON"),
    "body a list": (lambda p, a: _retry([SCHEDULE]), "record.body: expected an object, got list"),
    "no attempt": (lambda p, a: _retry({"event": SCHEDULE}), "record.body.attempt: missing"),
    "bare batch": (lambda p, a: _retry(_retry(SCHEDULE)), "record.body.event: a batch inside a batch"),
    "bare event unusable": (lambda p, a: _retry({"source": "evalstack.scheduler"}), "event.schedule_arn: missing"),
    "attempt zero": (lambda p, a: _retry({"event": SCHEDULE, "attempt": 0}), "expected a positive integer, got 0"),
    "attempt a string": (lambda p, a: _retry({"event": SCHEDULE, "attempt": "2"}),
                         "record.body.attempt: expected a non-empty int, got '2'"),
    "batch in a batch": (lambda p, a: _retry({"event": _retry({"event": SCHEDULE, "attempt": 1}), "attempt": 1}),
                         "record.body.event: a batch inside a batch"),
    "null event": (lambda p, a: _retry({"event": None, "attempt": 2}),
                   "record.body.event: expected a non-empty dict, got None"),
    "unusable event": (lambda p, a: _retry({"event": {"source": "aws.ec2"}, "attempt": 2}),
                       "unsupported event: source='aws.ec2'"),
}  # fmt: skip


def _assert_trigger_did_nothing(platform: Platform, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    ((message, fields),) = _errors(caplog)
    assert message == "trigger.invalid_event"
    assert re.search(reason, fields["reason"]), fields["reason"]
    assert platform.executions() == []
    assert platform.keys() == []
    assert platform.retry_queue_depth() == {"visible": 0, "delayed": 0}


@pytest.mark.parametrize("case", sorted(TRIGGER_EVENTS))
def test_trigger_logs_and_drops_an_unusable_event(
    case: str, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    (package,) = platform.packages(PENDING)
    build, reason = TRIGGER_EVENTS[case]
    with caplog.at_level("INFO", logger="evalstack"):
        result = trigger.handler(build(platform, package))
    assert result["status"] == "invalid-event"
    assert re.search(reason, result["reason"])
    _assert_trigger_did_nothing(platform, caplog, reason)


@pytest.mark.parametrize("case", sorted(RETRY_RECORDS))
def test_trigger_logs_and_drops_an_unusable_retry_record(
    case: str, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    (package,) = platform.packages(PENDING)
    build, reason = RETRY_RECORDS[case]
    with caplog.at_level("INFO", logger="evalstack"):
        result = trigger.handler(build(platform, package))
    # Not a batch item failure: redelivering the record could never make it usable.
    assert result.get("batchItemFailures", []) == []
    _assert_trigger_did_nothing(platform, caplog, reason)


def _status_change(platform: Platform, execution_arn: str, **detail: Any) -> dict[str, Any]:
    event = platform.gate_event(execution_arn)
    event["detail"].update(detail)
    return event


def _execution(platform: Platform, pipeline: str | None = None, execution_id: str = "abcdef123456") -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline or platform.pipeline}/execution/{execution_id}"


GATE_EVENTS: dict[str, tuple[Build, str]] = {
    "none": (lambda p, e: None, "event: expected an object, got NoneType"),
    "list": (lambda p, e: [p.gate_event(e)], "event: expected an object, got list"),
    "string": (lambda p, e: "Succeeded", "event: expected an object, got str"),
    "empty": (lambda p, e: {}, "unsupported event: source=None detail-type=None"),
    "package event": (lambda p, e: {**p.gate_event(e), "detail-type": "SageMaker Model Package State Change"},
                      "unsupported event: source='aws.sagemaker' detail-type='SageMaker Model Package State Change'"),
    "custom source": (lambda p, e: {**p.gate_event(e), "source": "my.app"}, "unsupported event: source='my.app'"),
    "null detail": (lambda p, e: {**p.gate_event(e), "detail": None}, "event.detail: expected a non-empty dict"),
    "list detail": (lambda p, e: {**p.gate_event(e), "detail": [1]}, "event.detail: expected a non-empty dict"),
    "no detail": (lambda p, e: _without(p.gate_event(e), "detail"), "event.detail: missing"),
    "no execution arn": (lambda p, e: {**p.gate_event(e), "detail": _without(p.gate_event(e)["detail"],
                                                                             "pipelineExecutionArn")},
                         "event.detail.pipelineExecutionArn: missing"),
    "null execution arn": (lambda p, e: _status_change(p, e, pipelineExecutionArn=None),
                           "event.detail.pipelineExecutionArn: expected a non-empty str, got None"),
    "pipeline arn": (lambda p, e: _status_change(p, e, pipelineExecutionArn=e.split("/execution/")[0]),
                     "not a pipeline execution ARN"),
    "traversal in the execution id": (lambda p, e: _status_change(p, e, pipelineExecutionArn=e + "/../../x"),
                                      "not a pipeline execution ARN"),
    "another pipeline": (lambda p, e: _status_change(p, e, pipelineExecutionArn=_execution(p, "someone-elses")),
                         "an execution of 'someone-elses', not"),
    "no status": (lambda p, e: {**p.gate_event(e), "detail": _without(p.gate_event(e)["detail"],
                                                                      "currentPipelineExecutionStatus")},
                  "event.detail.currentPipelineExecutionStatus: missing"),
    "status a number": (lambda p, e: _status_change(p, e, currentPipelineExecutionStatus=3),
                        "currentPipelineExecutionStatus: expected a non-empty str, got 3"),
    "no start time": (lambda p, e: {**p.gate_event(e), "detail": _without(p.gate_event(e)["detail"],
                                                                          "executionStartTime")},
                      "event.detail.executionStartTime: missing"),
    "start time not a time": (lambda p, e: _status_change(p, e, executionStartTime="yesterday"),
                              "executionStartTime: expected an ISO 8601 time"),
    "start time without offset": (lambda p, e: _status_change(p, e, executionStartTime="2026-11-28T12:00:05"),
                                  "with a UTC offset"),
    "start time a number": (lambda p, e: _status_change(p, e, executionStartTime=1795867200),
                            "executionStartTime: expected a non-empty str, got 1795867200"),
}  # fmt: skip


def _assert_package_untouched(platform: Platform, package: str) -> None:
    described = platform.package(package)
    assert described["ModelApprovalStatus"] == PENDING
    assert "ApprovalDescription" not in described


@pytest.mark.parametrize("case", sorted(GATE_EVENTS))
def test_gate_logs_and_drops_an_unusable_event(
    case: str, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)
    platform.write_report(started, PASSING, PASSING_COMPARISON)
    build, reason = GATE_EVENTS[case]

    with caplog.at_level("INFO", logger="evalstack"):
        result = approval.handler(build(platform, started["pipeline_execution_arn"]))

    assert result["status"] == "invalid-event"
    ((message, fields),) = _errors(caplog)
    assert message == "gate.invalid_event"
    assert re.search(reason, fields["reason"]), fields["reason"]
    _assert_package_untouched(platform, package)
    assert platform.notifications() == []


def _marker_uri(platform: Platform, started: dict[str, Any]) -> str:
    return f"{platform.control_uri}/markers/executions/{started['pipeline_execution_arn'].rsplit('/', 1)[-1]}.json"


def _edit_marker(platform: Platform, started: dict[str, Any], **changes: Any) -> None:
    uri = _marker_uri(platform, started)
    platform.write(uri, {**json.loads(platform.read(uri)), **changes})


def _edit_spec(platform: Platform, started: dict[str, Any], **changes: Any) -> bytes:
    body = json.dumps({**json.loads(platform.read(started["spec_uri"])), **changes}).encode()
    platform.write(started["spec_uri"], body)
    return body


def _spec_for_another_model(platform: Platform, started: dict[str, Any]) -> None:
    # A consistent forgery: the spec names another package and the marker carries the new digest.
    body = _edit_spec(platform, started, model=started["model_package_arn"][:-1] + "9")
    _edit_marker(platform, started, spec_sha256=hashlib.sha256(body).hexdigest())


def _drop_marker(platform: Platform, started: dict[str, Any]) -> None:
    bucket, key = _marker_uri(platform, started).removeprefix("s3://").split("/", 1)
    boto3.client("s3").delete_object(Bucket=bucket, Key=key)


def _drop_spec(platform: Platform, started: dict[str, Any]) -> None:
    bucket, key = started["spec_uri"].removeprefix("s3://").split("/", 1)
    boto3.client("s3").delete_object(Bucket=bucket, Key=key)


# What the forgery does (after the trigger started the execution and a passing report was written),
# and the reason the notification must give.
FORGED_STATE: dict[str, tuple[Callable[[Platform, dict[str, Any]], Any], str]] = {
    "no marker": (_drop_marker, "no marker at .*: the execution was not started by this platform's trigger"),
    "marker of another execution": (
        lambda p, s: _edit_marker(p, s, pipeline_execution_arn=_execution(p)), "marker pipeline_execution_arn is"),
    "marker of another group": (lambda p, s: _edit_marker(p, s, model_package_group="other"),
                                "marker model_package_group is 'other', expected"),
    "marker of another evaluation": (lambda p, s: _edit_marker(p, s, template_sha256="0" * 64),
                                     "marker template_sha256 is '0000"),
    "marker package not a package": (lambda p, s: _edit_marker(p, s, model_package_arn="bedrock:x"),
                                     "marker model_package_arn is 'bedrock:x', not a model package version"),
    "spec outside the control prefix": (
        lambda p, s: _edit_marker(p, s, spec_uri=f"s3://{p.bucket}/evaluations/spec.json"), "not under s3://"),
    "output path not s3": (lambda p, s: _edit_marker(p, s, output_path="/tmp/x"),
                           "marker output_path is '/tmp/x', not an s3:// URI"),
    "marker not json": (lambda p, s: p.write(_marker_uri(p, s), b"{oops"), "not a JSON document"),
    "marker a list": (lambda p, s: p.write(_marker_uri(p, s), [1]), "marker at .* is a JSON list, not an object"),
    "spec changed after the marker": (lambda p, s: _edit_spec(p, s, benchmark="BOOLQ"),
                                      "is not the one the trigger wrote"),
    "spec deleted": (_drop_spec, "is not the one the trigger wrote"),
    "spec for another package": (_spec_for_another_model, "evaluates .*9', not the marker's"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FORGED_STATE))
def test_gate_reports_a_forged_marker_or_spec_and_leaves_the_package(
    case: str, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)
    platform.write_report(started, {"metrics": {"accuracy": 0.99}}, PASSING_COMPARISON)
    forge, reason = FORGED_STATE[case]
    forge(platform, started)

    with caplog.at_level("INFO", logger="evalstack"):
        result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "unverifiable"
    _assert_package_untouched(platform, package)
    (message,) = platform.notifications()
    assert (message["outcome"], message["decision"], message["model_package_arn"]) == ("unverifiable", "none", None)
    assert re.search(reason, message["reasons"][0]), message["reasons"]
    assert [m for m, _ in _errors(caplog)] == ["gate.unverifiable"]


# Results.json / comparison.json bodies the Report step (job code) might leave, and the reason.
BROKEN_RESULTS: dict[str, tuple[bytes, bytes | None, str]] = {
    "nan metric": (b'{"metrics": {"accuracy": NaN}}', None, "metric 'accuracy' is nan in results.json"),
    "infinite metric": (b'{"metrics": {"accuracy": Infinity}}', None, "metric 'accuracy' is inf in results.json"),
    "string metric": (b'{"metrics": {"accuracy": "0.99"}}', None, "metric 'accuracy' is '0.99' in results.json"),
    "null metric": (b'{"metrics": {"accuracy": null}}', None, "metric 'accuracy' is None in results.json"),
    "missing metric": (b'{"metrics": {"f1": 0.99}}', None, "metric 'accuracy' is missing from results.json"),
    "null metrics": (b'{"metrics": null}', None, "results.json: 'metrics' is None, not an object"),
    "not json": (b"<html>502 Bad Gateway</html>", None, "results.json: not a JSON document"),
    "truncated": (b'{"metrics": {"accuracy": 0.9', None, "results.json: not a JSON document"),
    "a list": (b"[0.99]", None, "results.json is a JSON list, not an object"),
    "a string": (b'"approved"', None, "results.json is a JSON str, not an object"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, None, "results.json: not a JSON document"),
    "not utf-8": (b'{"metrics": {"accuracy": 0.9, "\xff": 1}}', None, "results.json: not a JSON document"),
    "comparison not json": (b'{"metrics": {"accuracy": 0.9}}', b"{", "comparison.json: not a JSON document"),
    "nan improvement": (b'{"metrics": {"accuracy": 0.9}}', b'{"improvements": {"accuracy": NaN}}',
                        "improvement of 'accuracy' is nan in comparison.json"),
    "significance not a test": (b'{"metrics": {"accuracy": 0.9}}',
                                b'{"improvements": {"accuracy": 0.1}, "significance": {"accuracy": 1}}',
                                "significance of 'accuracy' is 1, not a paired test"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN_RESULTS))
def test_gate_never_approves_broken_results(case: str, platform: Platform, caplog: pytest.LogCaptureFixture) -> None:
    # An Approved package is the base, so the execution compares and writes comparison.json.
    _base, package = platform.packages("Approved", PENDING)
    started = platform.evaluate(package)
    results, comparison, reason = BROKEN_RESULTS[case]
    platform.write_report(started, results, comparison)

    with caplog.at_level("INFO", logger="evalstack"):
        result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "undecided"
    _assert_package_untouched(platform, package)
    (message,) = platform.notifications()
    assert (message["outcome"], message["decision"], message["model_package_arn"]) == ("undecided", "none", package)
    assert any(re.search(reason, r) for r in message["reasons"]), message["reasons"]
    assert message["report_uri"].endswith("/report.html")
    assert [m for m, _ in _errors(caplog)] == ["gate.undecided"]
