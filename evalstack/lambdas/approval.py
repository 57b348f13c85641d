"""Model approval gate: on a finished evaluation pipeline execution, approve or reject the package.

Invoked by an EventBridge rule on "SageMaker Model Building Pipeline Execution Status Change". It
reads the execution's parameters (SpecUri, OutputPath), the spec (which names the model package),
the candidate's ``results.json`` and, when the base model ran, ``comparison.json``; then it sets the
package's approval status with UpdateModelPackage and publishes the decision to SNS.

Idempotent: the ApprovalDescription records the execution ARN, and a redelivered event for an
execution that already decided the package changes nothing and publishes nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import boto3

from .common import join_uri, log, read_json, require_env

PIPELINE_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
FINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
_MODEL_PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[^/]+/\d+$")
# UpdateModelPackage caps ApprovalDescription at 1,024 characters.
_DESCRIPTION_CHARS = 1024


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


def decide(results: dict[str, Any], comparison: dict[str, Any] | None, thresholds: Thresholds) -> Decision:
    """Apply every threshold; each failed one adds a reason, and any reason rejects."""
    reasons = []
    metrics = results.get("metrics", {})
    score = metrics.get(thresholds.metric)
    if score is None:
        reasons.append(f"metric {thresholds.metric!r} is missing from results.json (has {sorted(metrics)})")
    elif thresholds.min_score is not None and score < thresholds.min_score:
        reasons.append(f"{thresholds.metric} {score:.4f} is below the minimum score {thresholds.min_score:.4f}")
    improvement = (comparison or {}).get("improvement", {})
    if thresholds.min_improvement is not None:
        delta = improvement.get(thresholds.metric)
        if delta is None:
            reasons.append(f"no comparison with the base model for {thresholds.metric}")
        elif delta < thresholds.min_improvement:
            reasons.append(
                f"{thresholds.metric} improved by {delta:+.4f}, less than the minimum {thresholds.min_improvement:+.4f}"
            )
    if thresholds.block_significant_regression:
        for name, test in sorted((comparison or {}).get("significance", {}).items()):
            if isinstance(test, dict) and test.get("significant") and improvement.get(name, 0.0) < 0:
                reasons.append(f"{name} regressed significantly ({improvement[name]:+.4f}, p={test.get('p_value')})")
    return Decision(approved=not reasons, reasons=reasons)


def _describe(decision: Decision, execution_arn: str, thresholds: Thresholds) -> str:
    why = "; ".join(decision.reasons) if decision.reasons else f"all thresholds met for {thresholds.metric}"
    return f"evalstack {execution_arn}: {why}"[:_DESCRIPTION_CHARS]


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
    if execution_arn in package.get("ApprovalDescription", ""):
        log("gate.duplicate", model_package_arn=package_arn, pipeline_execution_arn=execution_arn)
        return {"status": "duplicate", "model_package_arn": package_arn}

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
    sm.update_model_package(
        ModelPackageArn=package_arn,
        ModelApprovalStatus=decision.status,
        ApprovalDescription=_describe(decision, execution_arn, thresholds),
    )
    outcome = {**message, "decision": decision.status, "reasons": decision.reasons, "metrics": results.get("metrics")}
    _publish(sns, topic_arn, f"evalstack: model package {decision.status.lower()}", outcome)
    log("gate.decided", **outcome)
    return {"status": decision.status, **outcome}
