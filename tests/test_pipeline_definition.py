"""The pipeline definitions: botocore request shapes, references, snapshots; the step's sharding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from evalstack.pipeline.definition import (
    NetworkConfig,
    QualityGate,
    build_definition,
    definition_json,
    iter_steps,
)
from evalstack.pipeline.step import Shard, current_shard
from evalstack.spec import EVAL_TYPES

SAMPLE_BY_TYPE = {"String": "sample", "Integer": 2, "Boolean": True, "Float": 0.5}
SAMPLE_STRINGS = {
    "ExecutionRoleArn": "arn:aws:iam::123456789012:role/evalstack-processing",
    "ProcessingImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/evalstack:latest",
    "InstanceType": "ml.m5.xlarge",
}
GATE = QualityGate("metrics.accuracy", 0.7)
NETWORK = NetworkConfig(subnets=["subnet-0a"], security_group_ids=["sg-0b"], enable_network_isolation=False)


def _model() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def _typed_samples(obj: Any, params: dict[str, dict[str, Any]]) -> Any:
    """``obj`` with every expression replaced by a value of the type it evaluates to."""
    if isinstance(obj, list):
        return [_typed_samples(v, params) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"Get"}:
        path = obj["Get"]
        if path.startswith("Parameters."):
            name = path.split(".", 1)[1]
            kind = params[name]["Type"]
            return SAMPLE_STRINGS.get(name, "sample") if kind == "String" else SAMPLE_BY_TYPE[kind]
        assert path.startswith("Execution."), path
        return "execution-sample"
    if set(obj) == {"Std:Join"}:
        return "s3://bucket/joined/sample"
    return {k: _typed_samples(v, params) for k, v in obj.items()}


def _references(obj: Any) -> list[str]:
    if isinstance(obj, list):
        return [r for v in obj for r in _references(v)]
    if isinstance(obj, dict):
        own = [obj["Get"]] if set(obj) == {"Get"} else []
        return own + [r for v in obj.values() for r in _references(v)]
    return []


@pytest.mark.parametrize("eval_type", EVAL_TYPES)
@pytest.mark.parametrize("options", [{}, {"quality_gate": GATE, "kms_key_id": "alias/evalstack", "network": NETWORK}])
def test_processing_arguments_validate_against_create_processing_job(eval_type: str, options: dict) -> None:
    definition = build_definition(eval_type, **options)
    params = {p["Name"]: p for p in definition["Parameters"]}
    shape = _model().shape_for("CreateProcessingJobRequest")
    processing = [s for s in iter_steps(definition["Steps"]) if s["Type"] == "Processing"]
    assert [s["Name"] for s in processing] == ["EvaluateModel", "EvaluateBaseModel", "ReportWithBase", "Report"]
    for step in processing:
        request = {"ProcessingJobName": "pipelines-sample", **_typed_samples(step["Arguments"], params)}
        report = ParamValidator().validate(request, shape)
        assert not report.has_errors(), f"{step['Name']}: {report.generate_report()}"
        # pipelines add the job name themselves; the definition must not fix one
        assert "ProcessingJobName" not in step["Arguments"]


@pytest.mark.parametrize("eval_type", EVAL_TYPES)
def test_every_reference_resolves(eval_type: str) -> None:
    definition = build_definition(eval_type, quality_gate=GATE)
    steps = {s["Name"]: s for s in iter_steps(definition["Steps"])}
    params = {p["Name"] for p in definition["Parameters"]}
    execution_vars = {"PipelineExecutionId", "PipelineName", "PipelineExecutionArn", "PipelineArn"}
    for ref in _references(definition):
        root, name, *rest = ref.split(".")
        if root == "Parameters":
            assert name in params, ref
        elif root == "Execution":
            assert name in execution_vars, ref
        else:
            assert root == "Steps" and name in steps, ref
            assert rest == ["PropertyFiles", "EvaluationReport"]
            assert steps[name]["PropertyFiles"][0]["PropertyFileName"] == "EvaluationReport"
    for step in steps.values():
        for dep in step.get("DependsOn", []):
            assert dep in steps, (step["Name"], dep)


def test_parameters_and_condition_semantics() -> None:
    definition = build_definition("benchmark")
    assert definition["Version"] == "2020-12-01"
    assert definition["Parameters"] == [
        {"Name": "SpecUri", "Type": "String"},
        {"Name": "OutputPath", "Type": "String"},
        {"Name": "EvaluateBaseModel", "Type": "Boolean", "DefaultValue": False},
        {"Name": "ProcessingImageUri", "Type": "String"},
        {"Name": "InstanceType", "Type": "String", "DefaultValue": "ml.m5.xlarge"},
        {"Name": "ReportInstanceType", "Type": "String", "DefaultValue": "ml.m5.large"},
        {"Name": "InstanceCount", "Type": "Integer", "DefaultValue": 1},
        {"Name": "ExecutionRoleArn", "Type": "String"},
    ]
    candidate, condition = definition["Steps"]
    assert candidate["Arguments"]["AppSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "-m",
        "evalstack.pipeline.step",
    ]
    assert candidate["Arguments"]["AppSpecification"]["ContainerArguments"][:5] == [
        "evaluate",
        "--eval-type",
        "benchmark",
        "--role",
        "candidate",
    ]
    assert candidate["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == {
        "Get": "Parameters.InstanceCount"
    }
    assert condition["Arguments"]["Conditions"] == [
        {"Type": "Equals", "LeftValue": {"Get": "Parameters.EvaluateBaseModel"}, "RightValue": True}
    ]
    assert [s["Name"] for s in condition["Arguments"]["IfSteps"]] == ["EvaluateBaseModel", "ReportWithBase"]
    assert [s["Name"] for s in condition["Arguments"]["ElseSteps"]] == ["Report"]
    retry_types = {t for policy in candidate["RetryPolicies"] for t in policy["ExceptionType"]}
    assert retry_types == {
        "Step.THROTTLING",
        "Step.SERVICE_FAULT",
        "SageMaker.JOB_INTERNAL_ERROR",
        "SageMaker.CAPACITY_ERROR",
        "SageMaker.RESOURCE_LIMIT",
    }


def test_quality_gate_reads_property_file_and_fails() -> None:
    definition = build_definition("llm_as_judge", quality_gate=QualityGate("improvement.accuracy", 0.0, "GreaterThan"))
    steps = {s["Name"]: s for s in iter_steps(definition["Steps"])}
    gate = steps["QualityGateWithBase"]
    assert gate["Arguments"]["Conditions"] == [
        {
            "Type": "GreaterThan",
            "LeftValue": {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.ReportWithBase.PropertyFiles.EvaluationReport"},
                    "Path": "improvement.accuracy",
                }
            },
            "RightValue": 0.0,
        }
    ]
    assert gate["Arguments"]["IfSteps"] == []
    assert [s["Type"] for s in gate["Arguments"]["ElseSteps"]] == ["Fail"]
    assert steps["ReportWithBase"]["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]
    assert steps["QualityGate"]["Arguments"]["Conditions"][0]["LeftValue"]["Std:JsonGet"]["PropertyFile"] == {
        "Get": "Steps.Report.PropertyFiles.EvaluationReport"
    }


def test_kms_network_and_fixed_role_flow_through() -> None:
    network = NetworkConfig(
        subnets=["subnet-1", "subnet-2"],
        security_group_ids=["sg-1"],
        enable_network_isolation=True,
        enable_inter_container_traffic_encryption=True,
    )
    role = "arn:aws:iam::123456789012:role/fixed"
    definition = build_definition("custom_scorer", role_arn=role, kms_key_id="key-123", network=network)
    assert "ExecutionRoleArn" not in {p["Name"] for p in definition["Parameters"]}
    for step in iter_steps(definition["Steps"]):
        if step["Type"] != "Processing":
            continue
        args = step["Arguments"]
        assert args["RoleArn"] == role
        assert args["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "key-123"
        assert args["NetworkConfig"] == {
            "EnableInterContainerTrafficEncryption": True,
            "EnableNetworkIsolation": True,
            "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1", "subnet-2"]},
        }
        if "ProcessingOutputConfig" in args:
            assert args["ProcessingOutputConfig"]["KmsKeyId"] == "key-123"


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ValueError, match="eval_type: must be one of"):
        build_definition("rag")
    with pytest.raises(ValueError, match=r"QualityGate.comparison"):
        QualityGate("metrics.accuracy", 0.5, "Above")
    with pytest.raises(ValueError, match=r"QualityGate.threshold"):
        QualityGate("metrics.accuracy", "high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subnets and security_group_ids"):
        NetworkConfig(subnets=["subnet-1"])


@pytest.mark.parametrize("eval_type", EVAL_TYPES)
def test_definition_snapshot(eval_type: str, snapshot) -> None:
    text = definition_json(eval_type)
    assert json.loads(text) == build_definition(eval_type)
    assert text == snapshot


def test_shard_from_resource_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTACK_OPT_ML_ROOT", str(tmp_path))
    monkeypatch.delenv("EVALSTACK_SHARD_INDEX", raising=False)
    monkeypatch.delenv("EVALSTACK_SHARD_COUNT", raising=False)
    assert current_shard() == Shard(0, 1)  # no resource config: the only shard
    config = tmp_path / "config" / "resourceconfig.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"current_host": "algo-3", "hosts": ["algo-2", "algo-3", "algo-1"]}))
    assert current_shard() == Shard(2, 3)
    monkeypatch.setenv("EVALSTACK_SHARD_INDEX", "1")
    monkeypatch.setenv("EVALSTACK_SHARD_COUNT", "4")
    assert current_shard() == Shard(1, 4)
    monkeypatch.setenv("EVALSTACK_SHARD_INDEX", "4")
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        current_shard()
    monkeypatch.delenv("EVALSTACK_SHARD_INDEX")
    with pytest.raises(ValueError, match="must be set together"):
        current_shard()
    monkeypatch.delenv("EVALSTACK_SHARD_COUNT")
    config.write_text(json.dumps({"current_host": "algo-9", "hosts": ["algo-1"]}))
    with pytest.raises(ValueError, match=r"resourceconfig.json: not a valid resource config"):
        current_shard()
