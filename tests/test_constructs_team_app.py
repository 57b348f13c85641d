"""The constructs composed as a platform team composes them (tests/apps/team_app.py), synthesized once.

Two stages, each with a data stack (key, bucket) and a network stack (VPC) referenced from a platform
stack holding two platforms on one VPC (the second with an imported key and a second model package
group), and a CI stack whose role may start both. cdk-nag AwsSolutions and Serverless report nothing
open and cfn-lint nothing at all, with no acknowledgement in the app.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint

from tests.apps import team_app
from tests.support.cdk import AppSynthesis, synthesize_app

APP_SOURCE = Path(team_app.__file__)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> AppSynthesis:
    outdir = tmp_path_factory.mktemp("cdk-team-app")
    app, _stages = team_app.build(outdir)
    return synthesize_app(app, outdir)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(team: AppSynthesis, stack: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, statement)
        for logical_id, policy in team.resources(stack, "AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _role_statements(team: AppSynthesis, stack: str, description: str) -> list[dict[str, Any]]:
    """Statements of the policies attached to the roles whose description contains ``description``."""
    roles = {k for k, r in team.resources(stack, "AWS::IAM::Role").items()
             if description in r["Properties"].get("Description", "")}  # fmt: skip
    assert roles, description
    return [
        statement
        for policy in team.resources(stack, "AWS::IAM::Policy").values()
        if {r.get("Ref") for r in policy["Properties"]["Roles"]} & roles
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_the_app_acknowledges_nothing_itself() -> None:
    tree = ast.parse(APP_SOURCE.read_text())
    called = {
        n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
    }
    assert "add_plugins" in called  # the packs are registered here ...
    assert not called & {"acknowledge", "acknowledge_warning", "acknowledge_info", "Acknowledgment"}  # ... only


def test_nag_packs_report_nothing_open(team: AppSynthesis) -> None:
    assert team.error is None
    assert [(v["ruleName"], v["violatingResources"][0]["constructPath"]) for v in team.violations()] == []
    assert sorted(team.templates) == sorted(
        f"{stage}/{stack}" for stage in team_app.STAGES for stack in ("Ci", "Data", "Network", "Platform")
    )


def test_cfn_lint_finds_nothing_in_any_template(team: AppSynthesis) -> None:
    findings = {
        stack: [f"{m.rule.id} {m.message}" for m in lint(path.read_text(), regions=["us-east-1"])]
        for stack, path in team.template_paths.items()
    }
    assert findings == {stack: [] for stack in team.template_paths}


def test_endpoints_live_in_the_platform_stack_once_per_vpc(team: AppSynthesis) -> None:
    for stage in team_app.STAGES:
        assert team.resources(f"{stage}/Network", "AWS::EC2::VPCEndpoint") == {}
        endpoints = team.resources(f"{stage}/Platform", "AWS::EC2::VPCEndpoint")
        assert len(endpoints) == 9 and all(k.startswith("Llm") for k in endpoints)
        assert {json.dumps(e["Properties"]["VpcId"]) for e in endpoints.values()} == {
            json.dumps(next(iter(endpoints.values()))["Properties"]["VpcId"])
        }
        assert "Fn::ImportValue" in next(iter(endpoints.values()))["Properties"]["VpcId"]
        # Both platforms' jobs run in the shared VPC, each with its own security group.
        groups = team.resources(f"{stage}/Platform", "AWS::EC2::SecurityGroup")
        assert sorted(k.split("Network")[0] for k in groups if "JobSecurityGroup" in k) == ["Llm", "Vision"]


def test_brought_in_key_gets_the_statements_and_the_imported_key_a_warning(team: AppSynthesis) -> None:
    (key,) = team.resources("Dev/Data", "AWS::KMS::Key").values()
    sids = sorted(s["Sid"] for s in key["Properties"]["KeyPolicy"]["Statement"])
    assert sids == [
        "AccountAdministersAndDelegatesKey", "CloudWatchAlarmsNotifyEncryptedTopics",
        "EventBridgeWritesEncryptedDeadLetterQueues", "LogsEncryptsEvalstackDevLogGroups",
        "LogsEncryptsTeamNetworkLogGroups",
    ]  # fmt: skip
    warnings = [w for w in team.warnings["Dev/Platform"] if "evalstack:ImportedKeyPolicy" in str(w)]
    assert len(warnings) == 1
    assert team_app.IMPORTED_KEY_ARN in warnings[0]
    for sid in ("LogsEncryptsEvalstackDevVisionLogGroups", "EventBridgeWritesEncryptedDeadLetterQueues",
                "CloudWatchAlarmsNotifyEncryptedTopics"):  # fmt: skip
        assert sid in warnings[0]
    assert "/evalstack/evalstack-dev-vision/*" in warnings[0]


def test_brought_in_bucket_uses_its_own_key_and_refuses_other_encryption(team: AppSynthesis) -> None:
    (policy,) = [p for k, p in team.resources("Dev/Data", "AWS::S3::BucketPolicy").items() if "DataBucket" in k]
    denials = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "Sid" in s}
    (key_id,) = team.resources("Dev/Data", "AWS::KMS::Key")
    assert denials["DenyUploadsWithAnotherKey"]["Condition"] == {
        "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": {"Fn::GetAtt": [key_id, "Arn"]}}
    }
    # The Llm platform's parameters name the data stack's key and bucket; it creates neither.
    platform = team.resources("Dev/Platform", "AWS::SSM::Parameter")
    (key_param,) = [p for k, p in platform.items() if k.startswith("LlmParameterKmsKeyArn")]
    assert "Fn::ImportValue" in key_param["Properties"]["Value"]
    assert not [k for k in team.resources("Dev/Platform", "AWS::S3::Bucket") if k.startswith("Llm")]


def test_job_roles_have_data_rights_only(team: AppSynthesis) -> None:
    statements = _role_statements(team, "Dev/Platform", "data rights only")  # both platforms' job roles
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert "s3:PutObject" in actions and "bedrock:InvokeModel" in actions
    assert not [a for a in actions if a.startswith("sagemaker:Create") or a == "iam:PassRole"]
    writes = {
        json.dumps(r) for s in statements if "s3:PutObject" in _as_list(s["Action"]) for r in _as_list(s["Resource"])
    }
    # Write-once under evaluations/ (If-None-Match), and the keys rewritten by design, for each bucket.
    rewritten = ("/progress/*/shard-*-of-*.json", "/Report/evaluation.json", "/ReportWithBase/evaluation.json")
    suffixes = tuple(f'/evaluations/*{k}"]]}}' for k in ("", *rewritten))
    assert len(writes) == 2 * len(suffixes) and all(w.endswith(suffixes) for w in writes)


def test_pipeline_roles_create_fenced_jobs_only(team: AppSynthesis) -> None:
    statements = _role_statements(team, "Dev/Platform", "creates the evaluation processing jobs")
    creates = [s for s in statements if s.get("Sid") == "CreateFencedProcessingJobs"]
    assert len(creates) == 2  # one per platform
    by_types = {tuple(s["Condition"]["ForAllValues:StringEquals"]["sagemaker:InstanceTypes"]): s for s in creates}
    assert sorted(by_types) == [("ml.m5.large", "ml.m5.xlarge"), ("ml.m5.xlarge", "ml.t3.medium")]
    for create in creates:
        condition = create["Condition"]
        assert set(condition) == {"ForAllValues:StringEquals", "Null", "ArnEquals", "ArnEqualsIfExists",
                                  "NumericLessThanEquals", "Bool"}  # fmt: skip
        subnets = condition["ForAllValues:StringEquals"]["sagemaker:VpcSubnets"]
        assert len(subnets) == 2 and all("Fn::ImportValue" in s for s in subnets)
    vision = by_types[("ml.m5.xlarge", "ml.t3.medium")]["Condition"]
    assert vision["ArnEquals"] == {"sagemaker:VolumeKmsKey": team_app.IMPORTED_KEY_ARN}
    passes = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert len(passes) == 2
    assert all(s["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}} for s in passes)


def test_second_model_package_group_has_its_own_trigger_and_gate(team: AppSynthesis) -> None:
    functions = [
        f["Properties"] for f in team.resources("Dev/Platform", "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("lambdas.")
    ]  # fmt: skip
    groups = sorted((f["Handler"], f["Environment"]["Variables"]["MODEL_PACKAGE_GROUP"]) for f in functions)
    assert groups == [
        ("lambdas.approval.handler", team_app.LLM_GROUP), ("lambdas.approval.handler", team_app.VISION_GROUP),
        ("lambdas.trigger.handler", team_app.LLM_GROUP), ("lambdas.trigger.handler", team_app.VISION_GROUP),
    ]  # fmt: skip
    (schedule,) = [
        s["Properties"] for s in team.resources("Dev/Platform", "AWS::Scheduler::Schedule").values()
        if s["Properties"]["ScheduleExpressionTimezone"] == "Europe/Berlin"
    ]  # fmt: skip
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    # Outputs are off for the Vision platform, on for the Llm one.
    outputs = team.templates["Dev/Platform"]["Outputs"]
    assert [k for k in outputs if k.startswith("Vision")] == []
    assert len([k for k in outputs if k.startswith("Llm")]) == 6


def test_cross_stack_ci_role_may_start_both_platforms_and_pass_no_role(team: AppSynthesis) -> None:
    statements = [s for _, s in _statements(team, "Dev/Ci")]
    started = sorted(
        str(s["Resource"]).split(":pipeline/")[1].rstrip("']}")
        for s in statements
        if "sagemaker:StartPipelineExecution" in _as_list(s["Action"])
    )
    assert started == [
        "evalstack-dev-benchmark", "evalstack-dev-custom-scorer", "evalstack-dev-llm-as-judge",
        "evalstack-dev-vision-custom-scorer",
    ]  # fmt: skip
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert "iam:PassRole" not in actions
