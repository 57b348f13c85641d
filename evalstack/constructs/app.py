"""The evalstack CDK app: context settings -> EvaluationPlatformStack, checked by cdk-nag v3.

``app.py`` at the repository root calls :func:`build_app`; tests and ``bench/synth_time.py`` call it
with their own context. Context keys (cdk.json ``context`` or ``-c key=value``; docs/deploy.md):

  stage                 default "dev"
  vpc                   "isolated" (new isolated VPC, default) | "existing" | "none"
  vpcId, vpcCidr, availabilityZones, subnetIds, routeTableIds   for vpc=existing (no lookup, works offline)
  createEndpoints       default true; false when the VPC already has the endpoints
  imageUri              a pushed processing image; default: build evalstack/image/Dockerfile
  evalTypes             default all: benchmark, custom_scorer, llm_as_judge
  instanceType, reportInstanceType, instanceCount
  mlflowTrackingServerArn   the SageMaker MLflow tracking server jobs may log to
  bedrockModels, endpointNames, secretArns      what jobs may invoke or read
  modelArtifactUris, jumpstartModels            model artifacts jobs download and serve (s3:// URIs; JumpStart ids)
  modelPackageGroup     enables continuous evaluation of this group
  schedule              default "rate(1 day)"; "none" disables the schedule
  evaluation            the spec template (JSON object) continuous evaluation runs
  thresholds            {"metric", "minScore", "minImprovement", "blockSignificantRegression"}: the approval gate
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.approval import ApprovalThresholds
from evalstack.constructs.platform import ContinuousEvaluationSettings, EvaluationPlatformStack
from evalstack.spec import EVAL_TYPES

VPC_MODES = ("isolated", "existing", "none")
# Feature flags the platform is designed for (cdk.json sets them too, for `npx cdk synth`).
FEATURE_FLAGS = {
    # Grant S3 log delivery by bucket policy instead of the LogDeliveryWrite ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


def _context(node: Any, key: str, default: Any = None) -> Any:
    value = node.try_get_context(key)
    if value is None:
        return default
    # -c key=value arrives as a string; JSON lists/objects/bools/numbers are decoded.
    if isinstance(value, str) and (value[:1] in "[{" or value in ("true", "false")):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"context {key}: invalid JSON: {err.msg}") from err
    return value


def _as_list(node: Any, key: str) -> list[str]:
    value = _context(node, key, [])
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


def _vpc_attributes(node: Any) -> dict[str, Any]:
    missing = [k for k in ("vpcId", "vpcCidr", "availabilityZones", "subnetIds") if not _context(node, k)]
    if missing:
        raise ValueError(f"context vpc=existing: set {missing}")
    attributes = {
        "vpc_id": _context(node, "vpcId"),
        "vpc_cidr_block": _context(node, "vpcCidr"),
        "availability_zones": _as_list(node, "availabilityZones"),
        "private_subnet_ids": _as_list(node, "subnetIds"),
    }
    route_tables = _as_list(node, "routeTableIds")
    if route_tables:
        attributes["private_subnet_route_table_ids"] = route_tables
    return attributes


def _continuous(node: Any) -> ContinuousEvaluationSettings | None:
    group = _context(node, "modelPackageGroup")
    if not group:
        return None
    evaluation = _context(node, "evaluation")
    if not isinstance(evaluation, dict):
        raise ValueError("context evaluation: a JSON object (the spec template) is required with modelPackageGroup")
    schedule = _context(node, "schedule", defaults.SCHEDULE)
    raw = _context(node, "thresholds")
    thresholds = None
    if raw:
        thresholds = ApprovalThresholds(
            metric=raw["metric"],
            min_score=raw.get("minScore"),
            min_improvement=raw.get("minImprovement"),
            block_significant_regression=bool(raw.get("blockSignificantRegression", True)),
        )
    return ContinuousEvaluationSettings(
        model_package_group=group,
        evaluation=evaluation,
        schedule=None if schedule == "none" else schedule,
        thresholds=thresholds,
    )


def platform_props(scope: Construct) -> dict[str, Any]:
    """EvaluationPlatform keyword props from the context of ``scope``."""
    node = scope.node
    mode = _context(node, "vpc", "isolated")
    if mode not in VPC_MODES:
        raise ValueError(f"context vpc: must be one of {list(VPC_MODES)}, got {mode!r}")
    return {
        "stage": _context(node, "stage", defaults.STAGE),
        "eval_types": _as_list(node, "evalTypes") or list(EVAL_TYPES),
        "use_vpc": mode != "none",
        "create_endpoints": bool(_context(node, "createEndpoints", True)),
        "image_uri": _context(node, "imageUri"),
        "endpoint_names": _as_list(node, "endpointNames"),
        "bedrock_models": _as_list(node, "bedrockModels"),
        "secret_arns": _as_list(node, "secretArns"),
        "model_artifact_uris": _as_list(node, "modelArtifactUris"),
        "jumpstart_models": _as_list(node, "jumpstartModels"),
        "instance_type": _context(node, "instanceType", defaults.INSTANCE_TYPE),
        "report_instance_type": _context(node, "reportInstanceType", defaults.REPORT_INSTANCE_TYPE),
        "instance_count": int(_context(node, "instanceCount", defaults.INSTANCE_COUNT)),
        "mlflow_tracking_server_arn": _context(node, "mlflowTrackingServerArn"),
        "continuous": _continuous(node),
    }


def build_app(app: cdk.App) -> EvaluationPlatformStack:
    """Add the platform stack and the cdk-nag AwsSolutions and Serverless packs to ``app``."""
    for flag, value in FEATURE_FLAGS.items():
        if app.node.try_get_context(flag) is None:
            app.node.set_context(flag, value)
    props = platform_props(app)
    stack = EvaluationPlatformStack(
        app,
        f"evalstack-{props['stage']}",
        description="evalstack evaluation platform",
        platform=props,
        vpc_attributes=_vpc_attributes(app.node) if _context(app.node, "vpc") == "existing" else None,
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    return stack
