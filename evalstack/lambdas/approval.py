"""Model approval gate: on a finished evaluation pipeline execution, approve or reject the package.

Invoked by an EventBridge rule on "SageMaker Model Building Pipeline Execution Status Change". It
reads the execution's parameters (SpecUri, OutputPath), the spec (which names the model package),
the candidate's ``results.json`` and, when the base model ran, ``comparison.json``; then it sets the
package's approval status with UpdateModelPackage and publishes the decision to SNS.

Idempotent: the ApprovalDescription records the execution ARN and start time; a redelivered event
for an execution that already decided the package changes nothing and publishes nothing, and an
event of an execution that started before the recorded one is skipped (it must not overwrite a
newer decision). The decision is published before the package is updated, so a retry after a
failed update may notify twice but never not at all.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3

from .common import join_uri, log, read_json, require_env

PIPELINE_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
FINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
_MODEL_PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[^/]+/\d+$")
# UpdateModelPackage caps ApprovalDescription at 1,024 characters (botocore's sagemaker model).
_DESCRIPTION_CHARS = 1024
# What _describe writes ahead of the reasons: "evalstack <execution ARN> started <UTC start time>: ".
_RECORDED = re.compile(r"^evalstack \S+ started (\S+): ")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


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
            return float(value) if value else None

        return cls(
            metric=require_env("METRIC"),
            min_score=number("MIN_SCORE"),
            min_improvement=number("MIN_IMPROVEMENT"),
            block_significant_regression=os.environ.get("BLOCK_SIGNIFICANT_REGRESSION", "true").lower() == "true",
        )


@dataclass
class Decision:
    approved: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "Approved" if self.approved else "Rejected"


def higher_is_better(metric: str, results: dict[str, Any], comparison: dict[str, Any] | None) -> bool:
    """The metric's direction: comparison.json's ``higher_is_better``, else the judge's per-metric
    details in results.json (no base run), else True (benchmark and scorer metrics)."""
    recorded = (comparison or {}).get("higher_is_better", {})
    if metric in recorded:
        return bool(recorded[metric])
    per_metric = results.get("details", {}).get("per_metric", {})
    return bool(per_metric.get(metric, {}).get("higher_is_better", True))


def decide(results: dict[str, Any], comparison: dict[str, Any] | None, thresholds: Thresholds) -> Decision:
    """Apply every threshold; each failed one adds a reason, and any reason rejects.

    For a metric where lower is better (judge toxicity, harmfulness, stereotypes, refusal) min_score
    is a maximum and an improvement is a decrease."""
    reasons = []
    metric = thresholds.metric
    up = higher_is_better(metric, results, comparison)
    lower_note = "" if up else " (lower is better)"
    metrics = results.get("metrics", {})
    score = metrics.get(metric)
    if score is None:
        reasons.append(f"metric {metric!r} is missing from results.json (has {sorted(metrics)})")
    elif thresholds.min_score is not None and (score < thresholds.min_score if up else score > thresholds.min_score):
        bound = "below the minimum" if up else "above the maximum"
        reasons.append(f"{metric} {score:.4f} is {bound} score {thresholds.min_score:.4f}{lower_note}")
    improvement = (comparison or {}).get("improvement", {})
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
                delta = improvement.get(name)
                shown = "" if delta is None else f"{delta:+.4f}, "
                reasons.append(f"{name} regressed significantly ({shown}p={test['p_value']})")
    return Decision(approved=not reasons, reasons=reasons)


def _describe(decision: Decision, execution_arn: str, started: str, thresholds: Thresholds) -> str:
    why = "; ".join(decision.reasons) if decision.reasons else f"all thresholds met for {thresholds.metric}"
    return f"evalstack {execution_arn} started {started}: {why}"[:_DESCRIPTION_CHARS]


def _utc(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp).astimezone(UTC)


def _recorded_start(description: str) -> datetime | None:
    """The start time of the execution whose decision ``description`` records, if evalstack wrote it."""
    match = _RECORDED.match(description)
    return _utc(match.group(1)) if match else None


def _publish(sns: Any, topic_arn: str, subject: str, message: dict[str, Any]) -> None:
    sns.publish(TopicArn=topic_arn, Subject=subject[:100], Message=json.dumps(message, indent=2, sort_keys=True))


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return judge(
        event,
        Thresholds.from_env(),
        require_env("TOPIC_ARN"),
        sm=boto3.client("sagemaker"),
        s3=boto3.client("s3"),
        sns=boto3.client("sns"),
    )


def judge(
    event: dict[str, Any], thresholds: Thresholds, topic_arn: str, *, sm: Any, s3: Any, sns: Any
) -> dict[str, Any]:
    """Handle one event with the given clients; see the module docstring."""
    if event.get("detail-type") != PIPELINE_EVENT:
        raise ValueError(f"unsupported event: detail-type={event.get('detail-type')!r}")
    detail = event["detail"]
    execution_arn = detail["pipelineExecutionArn"]
    status = detail["currentPipelineExecutionStatus"]
    log("gate.received", event_id=event.get("id"), pipeline_execution_arn=execution_arn, status=status)
    if status not in FINAL_STATUSES:
        return {"status": "ignored", "reason": f"execution status {status}"}

    params = {
        p["Name"]: p["Value"]
        for page in sm.get_paginator("list_pipeline_parameters_for_execution").paginate(
            PipelineExecutionArn=execution_arn
        )
        for p in page["PipelineParameters"]
    }
    spec = read_json(s3, params["SpecUri"])
    package_arn = (spec or {}).get("model", "")
    if not _MODEL_PACKAGE_ARN.match(package_arn):
        log("gate.not_a_model_package", model=package_arn, pipeline_execution_arn=execution_arn)
        return {"status": "ignored", "reason": "the evaluated model is not a model package version"}

    package = sm.describe_model_package(ModelPackageName=package_arn)
    description = package.get("ApprovalDescription", "")
    if execution_arn in description:
        log("gate.duplicate", model_package_arn=package_arn, pipeline_execution_arn=execution_arn)
        return {"status": "duplicate", "model_package_arn": package_arn}
    started = _utc(detail["executionStartTime"])
    recorded = _recorded_start(description)
    if recorded is not None and recorded > started:
        # A late or redelivered event of an older execution must not overwrite a newer decision.
        log("gate.superseded", model_package_arn=package_arn, pipeline_execution_arn=execution_arn,
            recorded_decision=description)  # fmt: skip
        return {"status": "superseded", "model_package_arn": package_arn}

    message = {"pipeline_execution_arn": execution_arn, "model_package_arn": package_arn, "execution_status": status}
    if status != "Succeeded":
        # No report to judge: leave the package's status alone and tell the humans.
        _publish(sns, topic_arn, f"evalstack: evaluation {status.lower()}", {**message, "decision": "none"})
        log("gate.execution_not_succeeded", **message)
        return {"status": "not-evaluated", **message}

    # The definition writes every execution's results under <OutputPath>/<execution id>.
    output = join_uri(params["OutputPath"], execution_arn.rsplit("/", 1)[-1])
    results = read_json(s3, join_uri(output, "results.json"))
    if results is None:
        raise FileNotFoundError(f"{join_uri(output, 'results.json')}: the succeeded execution wrote no results")
    comparison = read_json(s3, join_uri(output, "comparison.json"))
    decision = decide(results, comparison, thresholds)
    outcome = {**message, "decision": decision.status, "reasons": decision.reasons, "metrics": results.get("metrics")}
    # Publish first: if UpdateModelPackage then fails, the retry publishes again (a duplicate
    # notification beats none); the other order would let the retry see the decision and stay silent.
    _publish(sns, topic_arn, f"evalstack: model package {decision.status.lower()}", outcome)
    sm.update_model_package(
        ModelPackageArn=package_arn,
        ModelApprovalStatus=decision.status,
        ApprovalDescription=_describe(decision, execution_arn, started.strftime(_TIME_FORMAT), thresholds),
    )
    log("gate.decided", **outcome)
    return {"status": decision.status, **outcome}
