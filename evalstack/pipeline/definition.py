"""The SageMaker pipeline definition (schema version 2020-12-01) for each evaluation kind.

This is the only place the definition is written. The CDK constructs embed :func:`build_definition`'s
output in ``AWS::SageMaker::Pipeline``, and the local backend (:mod:`evalstack.pipeline.local`)
executes the same JSON. Field names follow the SageMaker pipeline definition JSON schema and what
the sagemaker-python-sdk emits: ``{"Get": ...}`` references, ``Std:Join``, ``Std:JsonGet``,
condition ``Type`` values ``Equals``/``GreaterThanOrEqualTo``/..., ``PropertyFiles`` and
Processing ``Arguments`` that are a ``CreateProcessingJob`` request without ``ProcessingJobName``.

Shape of every definition::

    EvaluateModel (Processing, candidate, sharded over InstanceCount instances)
    CheckEvaluateBaseModel (Condition: Parameters.EvaluateBaseModel == true)
      if:   EvaluateBaseModel (Processing, base) -> ReportWithBase -> [QualityGateWithBase -> Fail]
      else: Report -> [QualityGate -> Fail]

The report sits inside both branches on purpose: in SageMaker Pipelines a step that depends on a
step of the branch not taken is never executed, so one Report step after the condition could not
both wait for the base model and run without it. Both branches are built by one function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from evalstack.spec import EVAL_TYPES

DEFINITION_VERSION = "2020-12-01"
STEP_MODULE = "evalstack.pipeline.step"

# Parameter names: the runtime passes these to StartPipelineExecution.
SPEC_URI = "SpecUri"
OUTPUT_PATH = "OutputPath"
EVALUATE_BASE_MODEL = "EvaluateBaseModel"
PROCESSING_IMAGE_URI = "ProcessingImageUri"
INSTANCE_TYPE = "InstanceType"
REPORT_INSTANCE_TYPE = "ReportInstanceType"
INSTANCE_COUNT = "InstanceCount"
EXECUTION_ROLE_ARN = "ExecutionRoleArn"

# Step names.
EVALUATE_STEP = "EvaluateModel"
BASE_CONDITION_STEP = "CheckEvaluateBaseModel"
EVALUATE_BASE_STEP = "EvaluateBaseModel"
REPORT_STEP = "Report"
REPORT_WITH_BASE_STEP = "ReportWithBase"

# The Report step's property file: ``evaluation.json`` in its ``evaluation`` output.
PROPERTY_FILE_NAME = "EvaluationReport"
PROPERTY_FILE_PATH = "evaluation.json"
EVALUATION_OUTPUT = "evaluation"
EVALUATION_LOCAL_PATH = "/opt/ml/processing/evaluation"

DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
# The Report steps merge shards by streaming and compare: a small CPU instance whatever the evaluation runs on.
DEFAULT_REPORT_INSTANCE_TYPE = "ml.m5.large"
DEFAULT_VOLUME_SIZE_GB = 30
DEFAULT_MAX_RUNTIME_SECONDS = 86400

COMPARISONS = ("Equals", "GreaterThan", "GreaterThanOrEqualTo", "LessThan", "LessThanOrEqualTo")

# Throttling and capacity errors are retried; algorithm errors (a bad spec, a failing model) are not.
RETRY_POLICIES: list[dict[str, Any]] = [
    {
        "ExceptionType": ["Step.THROTTLING", "Step.SERVICE_FAULT"],
        "IntervalSeconds": 5,
        "BackoffRate": 2.0,
        "MaxAttempts": 5,
    },
    {
        "ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR", "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT"],
        "IntervalSeconds": 60,
        "BackoffRate": 2.0,
        "MaxAttempts": 5,
    },
]


@dataclass(frozen=True)
class QualityGate:
    """Fail the execution unless ``<metric> <comparison> <threshold>`` holds.

    ``metric`` is a JSON path into the Report step's ``evaluation.json`` (the engine's
    ``Report.summary()``), e.g. ``metrics.accuracy`` or ``improvement.accuracy``.
    """

    metric: str
    threshold: float
    comparison: str = "GreaterThanOrEqualTo"

    def __post_init__(self) -> None:
        if not self.metric or not isinstance(self.metric, str):
            raise ValueError("QualityGate.metric: a JSON path into evaluation.json is required")
        if self.comparison not in COMPARISONS:
            raise ValueError(f"QualityGate.comparison: must be one of {list(COMPARISONS)}, got {self.comparison!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise ValueError(f"QualityGate.threshold: must be a number, got {self.threshold!r}")


@dataclass(frozen=True)
class NetworkConfig:
    """Processing-job network settings (CreateProcessingJob ``NetworkConfig``)."""

    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    enable_network_isolation: bool = False
    enable_inter_container_traffic_encryption: bool = True

    def __post_init__(self) -> None:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("NetworkConfig: subnets and security_group_ids must be given together")

    def to_request(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "EnableInterContainerTrafficEncryption": self.enable_inter_container_traffic_encryption,
            "EnableNetworkIsolation": self.enable_network_isolation,
        }
        if self.subnets:
            out["VpcConfig"] = {"SecurityGroupIds": list(self.security_group_ids), "Subnets": list(self.subnets)}
        return out


def get(path: str) -> dict[str, str]:
    """A ``{"Get": path}`` reference (parameter, execution variable or step property)."""
    return {"Get": path}


def param(name: str) -> dict[str, str]:
    return get(f"Parameters.{name}")


def join(on: str, *values: Any) -> dict[str, Any]:
    return {"Std:Join": {"On": on, "Values": list(values)}}


def evaluation_output_uri() -> dict[str, Any]:
    """``<OutputPath>/<execution id>``: where every step of one execution reads and writes."""
    return join("/", param(OUTPUT_PATH), get("Execution.PipelineExecutionId"))


def _parameters(role_param: bool) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"Name": SPEC_URI, "Type": "String"},
        {"Name": OUTPUT_PATH, "Type": "String"},
        {"Name": EVALUATE_BASE_MODEL, "Type": "Boolean", "DefaultValue": False},
        {"Name": PROCESSING_IMAGE_URI, "Type": "String"},
        {"Name": INSTANCE_TYPE, "Type": "String", "DefaultValue": DEFAULT_INSTANCE_TYPE},
        {"Name": REPORT_INSTANCE_TYPE, "Type": "String", "DefaultValue": DEFAULT_REPORT_INSTANCE_TYPE},
        {"Name": INSTANCE_COUNT, "Type": "Integer", "DefaultValue": 1},
    ]
    if role_param:
        params.append({"Name": EXECUTION_ROLE_ARN, "Type": "String"})
    return params


@dataclass(frozen=True)
class _JobSettings:
    """What every Processing step shares: role, encryption, network and limits."""

    role_arn: Any
    kms_key_id: str | None
    network: NetworkConfig | None
    volume_size_gb: int = DEFAULT_VOLUME_SIZE_GB
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS


def _processing_step(
    name: str,
    command: list[Any],
    settings: _JobSettings,
    *,
    instance_type: Any,
    instance_count: Any,
    depends_on: list[str],
    outputs: list[dict[str, Any]] | None = None,
    property_files: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "InstanceCount": instance_count,
        "InstanceType": instance_type,
        "VolumeSizeInGB": settings.volume_size_gb,
    }
    if settings.kms_key_id:
        cluster["VolumeKmsKeyId"] = settings.kms_key_id
    arguments: dict[str, Any] = {
        "ProcessingResources": {"ClusterConfig": cluster},
        "AppSpecification": {
            "ImageUri": param(PROCESSING_IMAGE_URI),
            "ContainerEntrypoint": ["python3", "-m", STEP_MODULE],
            "ContainerArguments": command,
        },
        "RoleArn": settings.role_arn,
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_seconds},
        "Environment": {"PYTHONUNBUFFERED": "1"},
    }
    if outputs:
        output_config: dict[str, Any] = {"Outputs": outputs}
        if settings.kms_key_id:
            output_config["KmsKeyId"] = settings.kms_key_id
        arguments["ProcessingOutputConfig"] = output_config
    if settings.network is not None:
        arguments["NetworkConfig"] = settings.network.to_request()
    step: dict[str, Any] = {"Name": name, "Type": "Processing", "Arguments": arguments}
    if depends_on:
        step["DependsOn"] = depends_on
    if property_files:
        step["PropertyFiles"] = property_files
    step["RetryPolicies"] = [dict(policy) for policy in RETRY_POLICIES]
    return step


def _evaluate_command(eval_type: str, role: str) -> list[Any]:
    return [
        "evaluate",
        "--eval-type",
        eval_type,
        "--role",
        role,
        "--spec-uri",
        param(SPEC_URI),
        "--output-uri",
        evaluation_output_uri(),
    ]


def _report_steps(
    eval_type: str,
    settings: _JobSettings,
    *,
    with_base: bool,
    quality_gate: QualityGate | None,
) -> list[dict[str, Any]]:
    """The Report step (and its quality gate) of one branch of the base-model condition."""
    suffix = "WithBase" if with_base else ""
    report_name = REPORT_STEP + suffix
    command = [
        "report",
        "--eval-type",
        eval_type,
        "--spec-uri",
        param(SPEC_URI),
        "--output-uri",
        evaluation_output_uri(),
        "--property-file",
        f"{EVALUATION_LOCAL_PATH}/{PROPERTY_FILE_PATH}",
    ]
    if with_base:
        command.append("--with-base")
    output = {
        "OutputName": EVALUATION_OUTPUT,
        "AppManaged": False,
        "S3Output": {
            "S3Uri": join("/", param(OUTPUT_PATH), get("Execution.PipelineExecutionId"), report_name),
            "LocalPath": EVALUATION_LOCAL_PATH,
            "S3UploadMode": "EndOfJob",
        },
    }
    steps = [
        _processing_step(
            report_name,
            command,
            settings,
            instance_type=param(REPORT_INSTANCE_TYPE),
            instance_count=1,
            depends_on=[EVALUATE_STEP, EVALUATE_BASE_STEP] if with_base else [EVALUATE_STEP],
            outputs=[output],
            property_files=[
                {
                    "PropertyFileName": PROPERTY_FILE_NAME,
                    "OutputName": EVALUATION_OUTPUT,
                    "FilePath": PROPERTY_FILE_PATH,
                }
            ],
        )
    ]
    if quality_gate is not None:
        steps.append(_quality_gate_step(quality_gate, report_name, suffix))
    return steps


def _quality_gate_step(gate: QualityGate, report_name: str, suffix: str) -> dict[str, Any]:
    value = {
        "Std:JsonGet": {
            "PropertyFile": get(f"Steps.{report_name}.PropertyFiles.{PROPERTY_FILE_NAME}"),
            "Path": gate.metric,
        }
    }
    fail = {
        "Name": f"QualityGate{suffix}Failed",
        "Type": "Fail",
        "Arguments": {
            "ErrorMessage": join(
                " ",
                "Quality gate failed: expected",
                gate.metric,
                gate.comparison,
                str(gate.threshold),
                "in execution",
                get("Execution.PipelineExecutionId"),
            )
        },
    }
    return {
        "Name": f"QualityGate{suffix}",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": gate.comparison, "LeftValue": value, "RightValue": float(gate.threshold)}],
            "IfSteps": [],
            "ElseSteps": [fail],
        },
    }


def build_definition(
    eval_type: str,
    *,
    role_arn: str | None = None,
    quality_gate: QualityGate | None = None,
    kms_key_id: str | None = None,
    network: NetworkConfig | None = None,
    volume_size_gb: int = DEFAULT_VOLUME_SIZE_GB,
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS,
) -> dict[str, Any]:
    """The pipeline definition for ``eval_type`` (benchmark | custom_scorer | llm_as_judge).

    ``role_arn=None`` makes the processing-job role the ``ExecutionRoleArn`` pipeline parameter;
    a string embeds it. ``volume_size_gb`` and ``max_runtime_seconds`` apply to every Processing step
    (the pipeline role's IAM conditions hold the deployed values). The bound on parallel steps is not
    part of a definition in SageMaker: pass
    ``ParallelismConfiguration`` to CreatePipeline/StartPipelineExecution (the local client honours it).
    """
    if eval_type not in EVAL_TYPES:
        raise ValueError(f"eval_type: must be one of {list(EVAL_TYPES)}, got {eval_type!r}")
    settings = _JobSettings(
        role_arn=param(EXECUTION_ROLE_ARN) if role_arn is None else role_arn,
        kms_key_id=kms_key_id,
        network=network,
        volume_size_gb=volume_size_gb,
        max_runtime_seconds=max_runtime_seconds,
    )
    candidate = _processing_step(
        EVALUATE_STEP,
        _evaluate_command(eval_type, "candidate"),
        settings,
        instance_type=param(INSTANCE_TYPE),
        instance_count=param(INSTANCE_COUNT),
        depends_on=[],
    )
    base = _processing_step(
        EVALUATE_BASE_STEP,
        _evaluate_command(eval_type, "base"),
        settings,
        instance_type=param(INSTANCE_TYPE),
        instance_count=param(INSTANCE_COUNT),
        depends_on=[],
    )
    condition = {
        "Name": BASE_CONDITION_STEP,
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": param(EVALUATE_BASE_MODEL), "RightValue": True}],
            "IfSteps": [base, *_report_steps(eval_type, settings, with_base=True, quality_gate=quality_gate)],
            "ElseSteps": _report_steps(eval_type, settings, with_base=False, quality_gate=quality_gate),
        },
    }
    return {
        "Version": DEFINITION_VERSION,
        "Metadata": {},
        "Parameters": _parameters(role_param=role_arn is None),
        "PipelineExperimentConfig": {
            "ExperimentName": get("Execution.PipelineName"),
            "TrialName": get("Execution.PipelineExecutionId"),
        },
        "Steps": [candidate, condition],
    }


def definition_json(eval_type: str, **options: Any) -> str:
    """The definition as the JSON text CreatePipeline takes (``evalstack pipeline definition KIND``)."""
    return json.dumps(build_definition(eval_type, **options), indent=2, sort_keys=True) + "\n"


def iter_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step of a definition's ``Steps``, including those nested in Condition branches."""
    out: list[dict[str, Any]] = []
    for step in steps:
        out.append(step)
        if step["Type"] == "Condition":
            out.extend(iter_steps(step["Arguments"].get("IfSteps", [])))
            out.extend(iter_steps(step["Arguments"].get("ElseSteps", [])))
    return out
