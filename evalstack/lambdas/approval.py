"""Model approval gate: on a finished evaluation the platform started, approve or reject the package.

Invoked by an EventBridge rule on "SageMaker Model Building Pipeline Execution Status Change". The
gate trusts only what the trigger wrote under CONTROL_URI, where job code cannot write: the marker
keyed by the event's execution id. It acts only when
- the marker exists and names the event's execution, the configured group and the configured
  evaluation (the digest of SPEC_TEMPLATE), and the spec object still has the digest the marker
  recorded and names the marker's package;
- the package belongs to the configured group and its current status is one of GATED_STATUSES
  (default PendingManualApproval): a decision a person made is never overridden.
A run that fails a check is reported on SNS and the package is left untouched. The results are read
from the marker's OutputPath (never from the execution's own parameters), under the execution id.

Results that cannot be judged (results.json missing, not JSON, not an object; a metric that is
missing, NaN, infinite or not a number) never approve: the package stays pending and the
notification says why. Every notification carries the headline numbers, the decision with its
reasons and the S3 URI of report.html.

Idempotent: the ApprovalDescription records the execution ARN and start time; a redelivered event
for an execution that already decided the package changes nothing and publishes nothing, and an
event of an execution that started before the recorded one is skipped. The decision is published
before the package is updated, so a retry after a failed update may notify twice but never not at all.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3

from .common import (
    MODEL_PACKAGE_ARN,
    InvalidEvent,
    env_list,
    event_id,
    execution_marker_uri,
    invalid_event,
    join_uri,
    log,
    log_error,
    parse_json,
    pipeline_execution_parts,
    read_object,
    require,
    require_env,
    sha256_hex,
    shown,
    utc_time,
)
from .spec import template_sha256

PIPELINE_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
FINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
APPROVED, REJECTED, UNDECIDED = "Approved", "Rejected", "none"
DEFAULT_GATED_STATUSES = "PendingManualApproval"
# UpdateModelPackage caps ApprovalDescription at 1,024 characters (botocore's sagemaker model).
_DESCRIPTION_CHARS = 1024
# What _describe writes ahead of the reasons: "evalstack <execution ARN> started <UTC start time>: ".
_RECORDED = re.compile(r"^evalstack \S+ started (\S+): ")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# SNS takes 256 KB per message: the notification lists at most this many metrics and reason characters.
_NOTIFIED_METRICS = 50
_REASON_CHARS = 500


@dataclass(frozen=True)
class Thresholds:
    metric: str
    min_score: float | None = None
    min_improvement: float | None = None
    block_significant_regression: bool = True

    @classmethod
    def from_env(cls) -> Thresholds:
        def number(name: str) -> float | None:
            value = os.environ.get(name, "").strip()
            if not value:
                return None
            parsed = float(value)
            if not math.isfinite(parsed):
                raise ValueError(f"environment variable {name}: expected a finite number, got {value!r}")
            return parsed

        return cls(
            metric=require_env("METRIC"),
            min_score=number("MIN_SCORE"),
            min_improvement=number("MIN_IMPROVEMENT"),
            block_significant_regression=os.environ.get("BLOCK_SIGNIFICANT_REGRESSION", "true").lower() == "true",
        )


@dataclass(frozen=True)
class GateConfig:
    thresholds: Thresholds
    topic_arn: str
    pipeline_name: str
    model_package_group: str
    control_uri: str
    template_sha256: str
    gated_statuses: tuple[str, ...] = (DEFAULT_GATED_STATUSES,)

    @classmethod
    def from_env(cls) -> GateConfig:
        return cls(
            thresholds=Thresholds.from_env(),
            topic_arn=require_env("TOPIC_ARN"),
            pipeline_name=require_env("PIPELINE_NAME"),
            model_package_group=require_env("MODEL_PACKAGE_GROUP"),
            control_uri=require_env("CONTROL_URI"),
            template_sha256=template_sha256(require_env("SPEC_TEMPLATE")),
            gated_statuses=env_list("GATED_STATUSES", DEFAULT_GATED_STATUSES),
        )


@dataclass
class Decision:
    status: str  # APPROVED, REJECTED, or UNDECIDED (the results cannot be judged: leave the package as is)
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StatusChange:
    execution_arn: str
    execution_id: str
    status: str
    started: datetime


# comparison.json's per-metric differences (its "improvement" is the primary metric's, one number).
_IMPROVEMENTS = "improvements"


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (never a bool or a string), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _shown_number(value: Any) -> float | str | None:
    """A metric for the notification: the number, or the bad value as text (the message stays JSON)."""
    number = finite(value)
    return number if number is not None or value is None else shown(value)


def higher_is_better(metric: str, results: dict[str, Any], comparison: dict[str, Any] | None) -> bool:
    """The metric's direction: comparison.json's ``higher_is_better``, else the judge's per-metric
    details in results.json (no base run), else True (benchmark and scorer metrics)."""
    recorded = (comparison or {}).get("higher_is_better")
    if isinstance(recorded, dict) and metric in recorded:
        return bool(recorded[metric])
    details = results.get("details")
    per_metric = details.get("per_metric") if isinstance(details, dict) else None
    entry = per_metric.get(metric) if isinstance(per_metric, dict) else None
    return bool(entry.get("higher_is_better", True)) if isinstance(entry, dict) else True


def _problems(results: dict[str, Any], comparison: dict[str, Any] | None, thresholds: Thresholds) -> list[str]:
    """Why these results cannot be judged against ``thresholds``; empty when they can."""
    metric = thresholds.metric
    metrics = results.get("metrics")
    if not isinstance(metrics, dict):
        return [f"results.json: 'metrics' is {shown(metrics)}, not an object"]
    problems = []
    if metric not in metrics:
        names = sorted(str(name) for name in metrics)
        problems.append(f"metric {metric!r} is missing from results.json (has {shown(names)})")
    elif finite(metrics[metric]) is None:
        problems.append(f"metric {metric!r} is {shown(metrics[metric])} in results.json, not a finite number")
    for section in (_IMPROVEMENTS, "significance", "higher_is_better"):
        if comparison is not None and not isinstance(comparison.get(section, {}), dict):
            problems.append(f"comparison.json: {section!r} is {shown(comparison[section])}, not an object")
    if problems or comparison is None:
        return problems
    delta = comparison.get(_IMPROVEMENTS, {}).get(metric)
    if thresholds.min_improvement is not None and delta is not None and finite(delta) is None:
        problems.append(f"improvement of {metric!r} is {shown(delta)} in comparison.json, not a finite number")
    if thresholds.block_significant_regression:
        for name, test in sorted(comparison.get("significance", {}).items()):
            valid = isinstance(test, dict) and all(isinstance(test.get(k), bool) for k in ("significant", "regressed"))
            if not valid:
                problems.append(f"comparison.json: significance of {name!r} is {shown(test)}, not a paired test")
    return problems


def decide(results: dict[str, Any], comparison: dict[str, Any] | None, thresholds: Thresholds) -> Decision:
    """Apply every threshold; each failed one adds a reason, and any reason rejects. Results that
    cannot be judged (see _problems) give UNDECIDED with the problems as reasons.

    For a metric where lower is better (judge toxicity, harmfulness, stereotypes, refusal) min_score
    is a maximum and an improvement is a decrease."""
    problems = _problems(results, comparison, thresholds)
    if problems:
        return Decision(UNDECIDED, problems)
    reasons = []
    metric = thresholds.metric
    up = higher_is_better(metric, results, comparison)
    lower_note = "" if up else " (lower is better)"
    score = float(results["metrics"][metric])
    if thresholds.min_score is not None and (score < thresholds.min_score if up else score > thresholds.min_score):
        bound = "below the minimum" if up else "above the maximum"
        reasons.append(f"{metric} {score:.4f} is {bound} score {thresholds.min_score:.4f}{lower_note}")
    improvement = (comparison or {}).get(_IMPROVEMENTS, {})
    if thresholds.min_improvement is not None:
        delta = improvement.get(metric)
        if delta is None:
            reasons.append(f"no comparison with the base model for {metric}")
        elif (gain := delta if up else -delta) < thresholds.min_improvement:
            reasons.append(
                f"{metric} improved by {gain:+.4f}, less than the minimum {thresholds.min_improvement:+.4f}{lower_note}"
            )
    if thresholds.block_significant_regression:
        for name, test in sorted((comparison or {}).get("significance", {}).items()):
            # The direction comes from the paired test itself (``regressed``: significantly lower),
            # not from the aggregate difference: for corpus metrics (BLEU) the two can disagree.
            worse = test["regressed"] if higher_is_better(name, results, comparison) else not test["regressed"]
            if test["significant"] and worse:
                delta = finite(improvement.get(name))
                shown_delta = "" if delta is None else f"{delta:+.4f}, "
                reasons.append(f"{name} regressed significantly ({shown_delta}p={test.get('p_value')})")
    return Decision(REJECTED if reasons else APPROVED, reasons)


def _describe(decision: Decision, execution_arn: str, started: str, thresholds: Thresholds) -> str:
    why = "; ".join(decision.reasons) if decision.reasons else f"all thresholds met for {thresholds.metric}"
    return f"evalstack {execution_arn} started {started}: {why}"[:_DESCRIPTION_CHARS]


def _recorded_start(description: str) -> datetime | None:
    """The start time of the execution whose decision ``description`` records, if evalstack wrote it."""
    match = _RECORDED.match(description)
    if match is None:
        return None
    try:
        return utc_time(match.group(1), "ApprovalDescription")
    except InvalidEvent:
        return None


def parse_status_change(event: Any, pipeline_name: str) -> StatusChange:
    """The execution status change of ``pipeline_name`` that ``event`` reports; InvalidEvent otherwise."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"event: expected an object, got {type(event).__name__}")
    if event.get("source") != "aws.sagemaker" or event.get("detail-type") != PIPELINE_EVENT:
        raise InvalidEvent(
            f"unsupported event: source={shown(event.get('source'))} detail-type={shown(event.get('detail-type'))}"
        )
    detail = require(event, "detail", dict, "event")
    arn = require(detail, "pipelineExecutionArn", str, "event.detail")
    pipeline, execution_id = pipeline_execution_parts(arn, "event.detail.pipelineExecutionArn")
    if pipeline.lower() != pipeline_name.lower():
        raise InvalidEvent(f"event.detail.pipelineExecutionArn: an execution of {pipeline!r}, not {pipeline_name!r}")
    status = require(detail, "currentPipelineExecutionStatus", str, "event.detail")
    started = utc_time(require(detail, "executionStartTime", str, "event.detail"), "event.detail.executionStartTime")
    return StatusChange(arn, execution_id, status, started)


def _load(s3: Any, uri: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None), or (None, None) when absent, or (None, why) when it is not a JSON object."""
    stored = read_object(s3, uri)
    if stored is None:
        return None, None
    try:
        document = parse_json(stored.body, uri)
    except ValueError as err:
        return None, str(err)
    if not isinstance(document, dict):
        return None, f"{name} at {uri} is a JSON {type(document).__name__}, not an object"
    return document, None


def verify(s3: Any, config: GateConfig, change: StatusChange) -> tuple[dict[str, Any] | None, list[str]]:
    """The trigger's marker for this execution and why it cannot be trusted (empty when it can)."""
    uri = execution_marker_uri(config.control_uri, change.execution_id)
    marker, problem = _load(s3, uri, "marker")
    if problem:
        return None, [problem]
    if marker is None:
        return None, [f"no marker at {uri}: the execution was not started by this platform's trigger"]
    expected = {
        "pipeline_execution_arn": change.execution_arn,
        "model_package_group": config.model_package_group,
        "template_sha256": config.template_sha256,
    }
    problems = [
        f"marker {name} is {shown(marker.get(name))}, expected {shown(value)}"
        for name, value in expected.items()
        if marker.get(name) != value
    ]
    package = marker.get("model_package_arn")
    if not isinstance(package, str) or not MODEL_PACKAGE_ARN.match(package):
        problems.append(f"marker model_package_arn is {shown(package)}, not a model package version")
    output = marker.get("output_path")
    if not isinstance(output, str) or not output.startswith("s3://"):
        problems.append(f"marker output_path is {shown(output)}, not an s3:// URI")
    spec_uri = marker.get("spec_uri")
    if not isinstance(spec_uri, str) or not spec_uri.startswith(join_uri(config.control_uri, "specs/")):
        problems.append(f"marker spec_uri is {shown(spec_uri)}, not under {config.control_uri}/specs/")
    if problems:
        return marker, problems
    stored = read_object(s3, spec_uri)
    if stored is None or sha256_hex(stored.body) != marker.get("spec_sha256"):
        return marker, [f"the spec at {spec_uri} is not the one the trigger wrote (missing or changed)"]
    spec, problem = _load(s3, spec_uri, "spec")
    if problem:
        return marker, [problem]
    if spec is None or spec.get("model") != package:
        model = shown((spec or {}).get("model"))
        return marker, [f"the spec at {spec_uri} evaluates {model}, not the marker's {package}"]
    # Whether the verified spec ran the base: only then did the execution write comparison.json (job
    # code can create a missing key under another execution's output, never replace one).
    return {**marker, "evaluate_base_model": spec.get("evaluate_base_model") is True}, []


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return judge(
        event,
        GateConfig.from_env(),
        sm=boto3.client("sagemaker"),
        s3=boto3.client("s3"),
        sns=boto3.client("sns"),
    )


class _Notifier:
    """Publishes the gate's outcomes for one execution, each a JSON message with the same base fields."""

    def __init__(self, sns: Any, topic_arn: str, base: dict[str, Any]) -> None:
        self.sns, self.topic_arn, self.base = sns, topic_arn, base

    def publish(self, subject: str, outcome: str, decision: str, reasons: list[str], **extra: Any) -> dict[str, Any]:
        message = {
            **self.base,
            "outcome": outcome,
            "decision": decision,
            "reasons": [reason[:_REASON_CHARS] for reason in reasons],
            **extra,
        }
        text = json.dumps(message, indent=2, sort_keys=True, allow_nan=False)
        self.sns.publish(TopicArn=self.topic_arn, Subject=subject[:100], Message=text)
        return message


def headline(results: dict[str, Any], comparison: dict[str, Any] | None, metric: str) -> dict[str, Any]:
    """The numbers a person reads first: the gated metric, its base value and improvement, and the
    other metrics (finite numbers, at most _NOTIFIED_METRICS of them)."""
    metrics = results.get("metrics") if isinstance(results.get("metrics"), dict) else {}
    base = (comparison or {}).get("base")
    improvement = (comparison or {}).get(_IMPROVEMENTS)
    numbers = {str(k): finite(v) for k, v in sorted(metrics.items(), key=lambda kv: str(kv[0]))}
    return {
        "metric": metric,
        "score": _shown_number(metrics.get(metric)),
        "base_score": _shown_number(base.get(metric)) if isinstance(base, dict) else None,
        "improvement": _shown_number(improvement.get(metric)) if isinstance(improvement, dict) else None,
        "metrics": dict([(k, v) for k, v in numbers.items() if v is not None][:_NOTIFIED_METRICS]),
    }


def assess(s3: Any, output: str, thresholds: Thresholds, with_base: bool = True) -> tuple[Decision, dict[str, Any]]:
    """The decision on the results under ``output`` (an execution's folder) and their headline numbers;
    comparison.json is read only ``with_base``."""
    results_uri = join_uri(output, "results.json")
    results, problem = _load(s3, results_uri, "results.json")
    comparison, comparison_problem = (
        _load(s3, join_uri(output, "comparison.json"), "comparison.json") if with_base else (None, None)
    )
    if results is None or problem or comparison_problem:
        problems = [p for p in (problem, comparison_problem) if p]
        decision = Decision(UNDECIDED, problems or [f"{results_uri}: the succeeded execution wrote no results"])
    else:
        decision = decide(results, comparison, thresholds)
    return decision, headline(results or {}, comparison, thresholds.metric)


def judge(event: Any, config: GateConfig, *, sm: Any, s3: Any, sns: Any) -> dict[str, Any]:
    """Handle one event with the given clients; see the module docstring."""
    try:
        change = parse_status_change(event, config.pipeline_name)
    except InvalidEvent as err:
        return invalid_event("gate", err, event_id(event))
    log("gate.received", event_id=event_id(event), pipeline_execution_arn=change.execution_arn, status=change.status)
    if change.status not in FINAL_STATUSES:
        return {"status": "ignored", "reason": f"execution status {change.status}"}

    marker, problems = verify(s3, config, change)
    package_arn = (marker or {}).get("model_package_arn") if not problems else None
    notifier = _Notifier(
        sns,
        config.topic_arn,
        {
            "pipeline_execution_arn": change.execution_arn,
            "execution_status": change.status,
            "model_package_arn": package_arn,
        },
    )
    if problems:
        log_error("gate.unverifiable", pipeline_execution_arn=change.execution_arn, reasons=problems)
        message = notifier.publish("evalstack: evaluation not verified, no approval change", "unverifiable",
                                   UNDECIDED, problems)  # fmt: skip
        return {"status": "unverifiable", **message}

    package = sm.describe_model_package(ModelPackageName=package_arn)
    description = package.get("ApprovalDescription", "")
    if change.execution_arn in description:
        log("gate.duplicate", model_package_arn=package_arn, pipeline_execution_arn=change.execution_arn)
        return {"status": "duplicate", "model_package_arn": package_arn}
    recorded = _recorded_start(description)
    if recorded is not None and recorded > change.started:
        # A late or redelivered event of an older execution must not overwrite a newer decision.
        log("gate.superseded", model_package_arn=package_arn, pipeline_execution_arn=change.execution_arn,
            recorded_decision=description)  # fmt: skip
        return {"status": "superseded", "model_package_arn": package_arn}

    output = join_uri(marker["output_path"], change.execution_id)
    report = {"report_uri": join_uri(output, "report.html")}
    current = package.get("ModelApprovalStatus")
    if package.get("ModelPackageGroupName") != config.model_package_group or current not in config.gated_statuses:
        why = (
            f"the package is {current} in {package.get('ModelPackageGroupName')}; the gate decides only "
            f"{list(config.gated_statuses)} packages of {config.model_package_group} and leaves it as is"
        )
        log("gate.not_gated", model_package_arn=package_arn, reason=why)
        message = notifier.publish("evalstack: evaluation finished, no approval change", "not-gated", UNDECIDED,
                                   [why], **report)  # fmt: skip
        return {"status": "not-gated", **message}
    if change.status != "Succeeded":
        # No report to judge: leave the package's status alone and tell the humans.
        why = f"the evaluation {change.status.lower()}; the package stays {current}"
        log("gate.execution_not_succeeded", model_package_arn=package_arn, pipeline_execution_arn=change.execution_arn)
        message = notifier.publish(f"evalstack: evaluation {change.status.lower()}", "not-evaluated", UNDECIDED,
                                   [why], **report)  # fmt: skip
        return {"status": "not-evaluated", **message}

    decision, numbers = assess(s3, output, config.thresholds, with_base=marker["evaluate_base_model"])
    if decision.status == UNDECIDED:
        log_error("gate.undecided", model_package_arn=package_arn, reasons=decision.reasons)
        message = notifier.publish(f"evalstack: results not usable, package stays {current}", "undecided",
                                   UNDECIDED, decision.reasons, headline=numbers, **report)  # fmt: skip
        return {"status": "undecided", **message}
    # Publish first: if UpdateModelPackage then fails, the retry publishes again (a duplicate
    # notification beats none); the other order would let the retry see the decision and stay silent.
    message = notifier.publish(f"evalstack: model package {decision.status.lower()}", "decided", decision.status,
                               decision.reasons, headline=numbers, **report)  # fmt: skip
    sm.update_model_package(
        ModelPackageArn=package_arn,
        ModelApprovalStatus=decision.status,
        ApprovalDescription=_describe(
            decision, change.execution_arn, change.started.strftime(_TIME_FORMAT), config.thresholds
        ),
    )
    log("gate.decided", model_package_arn=package_arn, decision=decision.status, reasons=decision.reasons)
    return {"status": decision.status, **message}
