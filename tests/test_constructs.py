"""CDK constructs: template assertions, least-privilege IAM, cfn-lint, cdk-nag v3 and snapshots.

The app of ``app.py`` is synthesized once per context for the whole session (tests/support/cdk.py):
the default stack (new isolated VPC, Docker image asset, continuous evaluation and approval gate) and
an existing-VPC variant (imported VPC, pushed image URI, no continuous evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint

from evalstack.lambdas.trigger import SCHEDULER_INPUT
from tests.support.cdk import Synthesis, normalized, synthesize

EVALUATION = {"eval_type": "benchmark", "benchmark": "MMLU", "subtasks": ["anatomy"], "evaluate_base_model": True}
DEFAULT_CONTEXT = {
    "modelPackageGroup": "demo-models",
    "evaluation": EVALUATION,
    "thresholds": {"metric": "accuracy", "minScore": 0.5, "minImprovement": 0.0},
    "bedrockModels": [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.meta.llama3-2-1b-instruct-v1:0",
    ],
    "endpointNames": ["candidate-endpoint"],
}
EXISTING_VPC_CONTEXT = {
    "stage": "prod",
    "vpc": "existing",
    "vpcId": "vpc-0123456789abcdef0",
    "vpcCidr": "10.20.0.0/16",
    "availabilityZones": "us-east-1a,us-east-1b",
    "subnetIds": "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb",
    "routeTableIds": "rtb-0aaaaaaaaaaaaaaaa,rtb-0bbbbbbbbbbbbbbbb",
    "imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/evalstack:1.0.0",
}
# Actions AWS authorizes only with "Resource": "*" (no resource-level permissions).
UNSCOPABLE_ACTIONS = {
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "ecr:GetAuthorizationToken", "sagemaker:ListModelPackages",
    "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
    "ec2:DescribeVpcs", "cloudwatch:PutMetricData",
}  # fmt: skip
POLICY_DOCUMENTS = {
    "AWS::IAM::Policy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
}


@pytest.fixture(scope="session")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    return synthesize(DEFAULT_CONTEXT, tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def existing_vpc_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    return synthesize(EXISTING_VPC_CONTEXT, tmp_path_factory.mktemp("cdk-existing-vpc"))


@pytest.fixture(params=["default_stack", "existing_vpc_stack"])
def synthesis(request: pytest.FixtureRequest) -> Synthesis:
    return request.getfixturevalue(request.param)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(synth: Synthesis) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for resource_type, key in POLICY_DOCUMENTS.items():
        for logical_id, resource in synth.resources(resource_type).items():
            out += [(resource_type, logical_id, s) for s in resource["Properties"][key]["Statement"]]
    return out


def _render(value: Any) -> str:
    """A CloudFormation string with its intrinsic parts replaced by placeholders."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_render(p) for p in parts)
    return "TOKEN"


# --- cdk-nag v3 and CloudFormation validation ---------------------------------------------------------


@pytest.mark.parametrize("pack", ["AwsSolutions", "Serverless", "CloudFormation Validate"])
def test_validation_plugins_report_no_unacknowledged_findings(synthesis: Synthesis, pack: str) -> None:
    assert [v["ruleName"] for v in synthesis.violations(pack)] == []
    assert synthesis.error is None


def test_acknowledgements_are_granular_and_reasoned(default_stack: Synthesis, snapshot) -> None:
    ours = [a for a in default_stack.acknowledgements if a["id"].startswith(("AwsSolutions::", "Serverless::"))]
    for ack in ours:
        assert ack["id"] not in ("AwsSolutions::AwsSolutions-IAM5", "AwsSolutions::AwsSolutions-IAM4"), ack
        assert len(ack["reason"]) >= 40, ack
    # Reviewers see every added or removed acknowledgement in the snapshot diff.
    assert sorted({(a["path"], a["id"]) for a in ours}) == snapshot


def test_a_new_finding_fails_synthesis(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs
    from cdk_nag import AwsSolutionsChecks, ServerlessChecks

    app = cdk.App(outdir=str(tmp_path), context={"@aws-cdk/core:validationReportJson": True})
    stack = cdk.Stack(app, "Regression")
    sqs.Queue(stack, "PlainQueue")  # no SSL-only policy, no DLQ
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "policy-validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4", "Serverless-SQSRedrivePolicy"} <= rules


def test_cfn_lint_reports_no_errors_or_warnings(synthesis: Synthesis) -> None:
    matches = lint(synthesis.template_path.read_text(), regions=["us-east-1"])
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.id[0] in "EW"] == []


# --- IAM: least privilege --------------------------------------------------------------------------------


def test_no_allow_statement_has_a_wildcard_action(synthesis: Synthesis) -> None:
    offending = [
        (logical_id, action)
        for _type, logical_id, statement in _statements(synthesis)
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
        if "*" in action
    ]
    assert offending == []


def test_only_ssl_denials_use_service_wildcards(synthesis: Synthesis) -> None:
    for _type, logical_id, statement in _statements(synthesis):
        if statement["Effect"] == "Deny":
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, logical_id


def test_every_identity_policy_resource_is_scoped(synthesis: Synthesis) -> None:
    unscoped = []
    for logical_id, policy in synthesis.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "*" in _as_list(statement["Resource"]):
                unscoped += [(logical_id, a) for a in _as_list(statement["Action"]) if a not in UNSCOPABLE_ACTIONS]
    assert unscoped == []
    assert not any("Policies" in r["Properties"] for r in synthesis.resources("AWS::IAM::Role").values())
    assert not any("ManagedPolicyArns" in r["Properties"] for r in synthesis.resources("AWS::IAM::Role").values())


def _role_policy(synth: Synthesis) -> dict[str, dict[str, Any]]:
    (policy,) = [p for k, p in synth.resources("AWS::IAM::Policy").items() if k.startswith("PlatformRolePolicy")]
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "Sid" in s}


def test_execution_role_grants_only_named_models_and_vpc_interfaces(default_stack: Synthesis) -> None:
    statements = _role_policy(default_stack)
    assert _render(statements["InvokeNamedEndpoints"]["Resource"]) == (
        "arn:TOKEN:sagemaker:TOKEN:TOKEN:endpoint/candidate-endpoint"
    )
    # A cross-region profile (by id or ARN) also needs its foundation model, in any Region it routes to.
    assert sorted(_render(r) for r in statements["InvokeNamedBedrockModels"]["Resource"]) == [
        "arn:TOKEN:bedrock:*::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:TOKEN:bedrock:*::foundation-model/meta.llama3-2-1b-instruct-v1:0",
        "arn:TOKEN:bedrock:TOKEN::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
        "arn:TOKEN:bedrock:TOKEN:TOKEN:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.meta.llama3-2-1b-instruct-v1:0",
    ]
    network = statements["ManageJobNetworkInterfacesInVpc"]
    assert list(network["Condition"]) == ["ArnEquals"] and "ec2:Vpc" in network["Condition"]["ArnEquals"]
    # ec2:Vpc is no condition key of the interface CreateNetworkInterface creates: that resource stands alone.
    create = statements["CreateJobNetworkInterfaces"]
    assert create["Action"] == "ec2:CreateNetworkInterface" and "Condition" not in create
    assert _render(create["Resource"]) == "arn:TOKEN:ec2:TOKEN:TOKEN:network-interface/*"
    assert statements["EncryptJobOutputs"]["Action"] == ["kms:DescribeKey", "kms:Encrypt"]
    assert "Condition" not in statements["EncryptJobOutputs"]
    assert statements["PublishProcessingJobMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/ProcessingJobs"}
    }
    assert statements["PassOwnRoleToProcessingJobs"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert _render(statements["RunProcessingJobs"]["Resource"]) == (
        "arn:TOKEN:sagemaker:TOKEN:TOKEN:processing-job/pipelines-*"
    )


def test_pushed_image_uri_grants_pull_on_its_repository_only(existing_vpc_stack: Synthesis) -> None:
    statements = _role_policy(existing_vpc_stack)
    assert _render(statements["PullProcessingImage"]["Resource"]) == (
        "arn:TOKEN:ecr:us-east-1:123456789012:repository/evalstack"
    )
    assert "InvokeNamedBedrockModels" not in statements


# --- resources -------------------------------------------------------------------------------------------


def test_key_rotates_and_bucket_is_encrypted_ssl_only_versioned_and_logged(default_stack: Synthesis) -> None:
    (key,) = default_stack.resources("AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"
    buckets = default_stack.resources("AWS::S3::Bucket")
    (data,) = [b for k, b in buckets.items() if not k.startswith("PlatformBucketAccessLogs")]
    props = data["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["BucketKeyEnabled"] is True
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True
    }  # fmt: skip
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "evaluation-bucket/"
    assert [r["Id"] for r in props["LifecycleConfiguration"]["Rules"]] == ["ExpireNoncurrentVersions"]
    assert len(default_stack.resources("AWS::S3::BucketPolicy")) == 2  # SSL-only on both buckets


def test_one_pipeline_per_kind_embeds_the_definition(default_stack: Synthesis) -> None:
    pipelines = default_stack.resources("AWS::SageMaker::Pipeline")
    names = sorted(p["Properties"]["PipelineName"] for p in pipelines.values())
    assert names == ["evalstack-dev-benchmark", "evalstack-dev-custom-scorer", "evalstack-dev-llm-as-judge"]
    for pipeline in pipelines.values():
        assert [d for d in pipeline["DependsOn"] if d.startswith("PlatformRolePolicy")]
        body = json.loads(_render(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]))
        defaults = {p["Name"]: p.get("DefaultValue") for p in body["Parameters"]}
        assert defaults == {
            "SpecUri": None, "OutputPath": None, "EvaluateBaseModel": False, "ProcessingImageUri": "TOKEN",
            "InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
        }  # fmt: skip
        arguments = body["Steps"][0]["Arguments"]
        assert arguments["RoleArn"] == "TOKEN"
        assert arguments["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "TOKEN"
        assert len(arguments["NetworkConfig"]["VpcConfig"]["Subnets"]) == 2
        assert pipeline["Properties"]["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 4}


def test_vpc_endpoints_and_security_groups(synthesis: Synthesis) -> None:
    endpoints = synthesis.resources("AWS::EC2::VPCEndpoint").values()
    services = sorted(_render(e["Properties"]["ServiceName"]).removeprefix("com.amazonaws.TOKEN.") for e in endpoints)
    assert services == [
        "bedrock-runtime", "ecr.api", "ecr.dkr", "logs", "s3", "sagemaker.api", "sagemaker.runtime", "secretsmanager",
        "sts",
    ]  # fmt: skip
    for group in synthesis.resources("AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert (rule["FromPort"], rule["ToPort"], rule["IpProtocol"]) == (443, 443, "tcp")
            assert rule["CidrIp"] in ("10.60.0.0/16", "10.20.0.0/16")


def test_new_vpc_is_isolated_with_flow_logs(default_stack: Synthesis, existing_vpc_stack: Synthesis) -> None:
    assert len(default_stack.resources("AWS::EC2::VPC")) == 1
    assert default_stack.resources("AWS::EC2::InternetGateway") == {}
    assert default_stack.resources("AWS::EC2::NatGateway") == {}
    assert len(default_stack.resources("AWS::EC2::FlowLog")) == 1
    assert existing_vpc_stack.resources("AWS::EC2::VPC") == {}
    vpc_ids = {e["Properties"]["VpcId"] for e in existing_vpc_stack.resources("AWS::EC2::VPCEndpoint").values()}
    assert vpc_ids == {"vpc-0123456789abcdef0"}


def test_lambdas_are_bounded_traced_and_have_dead_letter_queues(default_stack: Synthesis) -> None:
    functions = default_stack.resources("AWS::Lambda::Function")
    assert sorted(f["Properties"]["Handler"] for f in functions.values()) == [
        "lambdas.approval.handler",
        "lambdas.trigger.handler",
    ]
    for function in functions.values():
        props = function["Properties"]
        assert props["Runtime"] == "python3.14"
        assert props["Timeout"] <= 120 and props["MemorySize"] == 256
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert "TargetArn" in props["DeadLetterConfig"] and "KmsKeyArn" in props
    for config in default_stack.resources("AWS::Lambda::EventInvokeConfig").values():
        assert config["Properties"]["MaximumRetryAttempts"] == 2
        assert "Destination" in config["Properties"]["DestinationConfig"]["OnFailure"]
    for queue in default_stack.resources("AWS::SQS::Queue").values():
        assert "KmsMasterKeyId" in queue["Properties"]


def test_schedule_and_rules_feed_the_trigger_and_gate(default_stack: Synthesis) -> None:
    (schedule,) = default_stack.resources("AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == "rate(1 day)"
    assert json.loads(props["Target"]["Input"]) == SCHEDULER_INPUT
    assert props["Target"]["RetryPolicy"] == {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 3}
    assert "DeadLetterConfig" in props["Target"] and "KmsKeyArn" in props
    patterns = sorted(
        (r["Properties"]["EventPattern"] for r in default_stack.resources("AWS::Events::Rule").values()),
        key=lambda p: p["detail-type"][0],
    )
    assert patterns[0]["detail-type"] == ["SageMaker Model Building Pipeline Execution Status Change"]
    assert patterns[0]["detail"]["currentPipelineExecutionStatus"] == ["Succeeded", "Failed", "Stopped"]
    assert patterns[1] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {
            "ModelPackageGroupName": ["demo-models"],
            "ModelPackageStatus": ["Completed"],
            "ModelApprovalStatus": ["PendingManualApproval"],
        },
    }
    (topic,) = default_stack.resources("AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]


def test_trigger_environment_carries_the_validated_template(default_stack: Synthesis) -> None:
    (trigger,) = [
        f for f in default_stack.resources("AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == "lambdas.trigger.handler"
    ]  # fmt: skip
    env = trigger["Properties"]["Environment"]["Variables"]
    assert json.loads(env["SPEC_TEMPLATE"]) == EVALUATION
    assert env["PIPELINE_NAME"] == "evalstack-dev-benchmark"
    assert env["CONCURRENCY_PIPELINES"] == (
        "evalstack-dev-benchmark,evalstack-dev-custom-scorer,evalstack-dev-llm-as-judge"
    )
    assert env["MAX_CONCURRENT_EVALUATIONS"] == "10"


def test_ssm_parameters_let_the_runtime_find_the_pipelines(synthesis: Synthesis) -> None:
    stage = "dev" if synthesis.stack_name == "evalstack-dev" else "prod"
    names = sorted(p["Properties"]["Name"] for p in synthesis.resources("AWS::SSM::Parameter").values())
    assert names == [
        f"/evalstack/{stage}/kms-key-arn",
        f"/evalstack/{stage}/output-uri",
        f"/evalstack/{stage}/pipelines/benchmark",
        f"/evalstack/{stage}/pipelines/custom_scorer",
        f"/evalstack/{stage}/pipelines/llm_as_judge",
        f"/evalstack/{stage}/role-arn",
    ]
    assert len(synthesis.template["Outputs"]) == 6


def test_template_snapshot(synthesis: Synthesis, snapshot) -> None:
    assert normalized(synthesis.template) == snapshot
