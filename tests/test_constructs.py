"""CDK constructs: template assertions, least-privilege IAM, cfn-lint, cdk-nag v3 and snapshots.

The app of ``app.py`` is synthesized once per context for the whole session (tests/support/cdk.py):
the default stack (new isolated VPC, Docker image asset, continuous evaluation and approval gate) and
an existing-VPC variant (imported VPC, pushed image URI, no continuous evaluation). The composed team
app (two stages, cross-stack references, two platforms on one VPC) is tests/test_constructs_team_app.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint

from evalstack.constructs.bucket import REWRITTEN_OUTPUT_KEYS
from evalstack.engine.run import progress_uri, shard_uri
from evalstack.lambdas.trigger import SCHEDULER_INPUT
from evalstack.pipeline.definition import REPORT_STEP, REPORT_WITH_BASE_STEP, definition_json, iter_steps
from tests.support.cdk import Synthesis, normalized, render, synthesize

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
MLFLOW_SERVER = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
EXISTING_VPC_CONTEXT = {
    "stage": "prod",
    "vpc": "existing",
    "vpcId": "vpc-0123456789abcdef0",
    "vpcCidr": "10.20.0.0/16",
    "availabilityZones": "us-east-1a,us-east-1b",
    "subnetIds": "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb",
    "routeTableIds": "rtb-0aaaaaaaaaaaaaaaa,rtb-0bbbbbbbbbbbbbbbb",
    "imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/evalstack:1.0.0",
    "mlflowTrackingServerArn": MLFLOW_SERVER,
    "modelArtifactUris": "s3://team-models/llm/v3/model.tar.gz,s3://team-models/uncompressed/llm-v4/",
    "jumpstartModels": "meta-textgeneration-llama-3-2-1b",
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




# --- cdk-nag v3 and CloudFormation validation ---------------------------------------------------------


# CDK's own provider for restrict_default_security_group (a singleton Lambda outside evalstack's code).
CDK_PROVIDER = "CustomVpcRestrictDefaultSGCustomResourceProvider"
SSE_KMS_DENIALS = {"DenyUploadsNotSseKms", "DenyUploadsWithAnotherKey"}
JOB_WRITE_ONCE_DENIALS = {"DenyJobRewritesOfOutputs", "DenyJobDeletesAndVersionChanges"}


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


def test_denials_are_ssl_only_or_sse_kms_with_the_platform_key(synthesis: Synthesis) -> None:
    sse_kms = []
    for _type, logical_id, statement in _statements(synthesis):
        if statement["Effect"] != "Deny":
            continue
        if statement.get("Sid") in SSE_KMS_DENIALS:
            assert statement["Action"] == "s3:PutObject", logical_id
            sse_kms.append((statement["Sid"], statement["Condition"]["StringNotEqualsIfExists"]))
        elif statement.get("Sid") in JOB_WRITE_ONCE_DENIALS:
            continue  # test_job_outputs_are_write_once_and_never_deleted
        else:
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, logical_id
    (key_arn,) = [c["s3:x-amz-server-side-encryption-aws-kms-key-id"] for sid, c in sse_kms if "Another" in sid]
    assert sorted(sse_kms, key=str) == sorted(
        [("DenyUploadsNotSseKms", {"s3:x-amz-server-side-encryption": "aws:kms"}),
         ("DenyUploadsWithAnotherKey", {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn})], key=str
    )  # fmt: skip
    assert key_arn == {"Fn::GetAtt": [_only_key(synthesis), "Arn"]}


def _only_key(synth: Synthesis) -> str:
    (logical_id,) = synth.resources("AWS::KMS::Key")
    return logical_id


def test_every_identity_policy_resource_is_scoped(synthesis: Synthesis) -> None:
    unscoped = []
    for logical_id, policy in synthesis.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "*" in _as_list(statement["Resource"]):
                unscoped += [(logical_id, a) for a in _as_list(statement["Action"]) if a not in UNSCOPABLE_ACTIONS]
    assert unscoped == []
    ours = {k: r for k, r in synthesis.resources("AWS::IAM::Role").items() if not k.startswith(CDK_PROVIDER)}
    assert not any("Policies" in r["Properties"] for r in ours.values())
    assert not any("ManagedPolicyArns" in r["Properties"] for r in ours.values())


def _policy(synth: Synthesis, prefix: str) -> dict[str, dict[str, Any]]:
    (policy,) = [p for k, p in synth.resources("AWS::IAM::Policy").items() if k.startswith(prefix)]
    return {s.get("Sid", f"#{i}"): s for i, s in enumerate(policy["Properties"]["PolicyDocument"]["Statement"])}


def _role_policy(synth: Synthesis) -> dict[str, dict[str, Any]]:
    return _policy(synth, "PlatformRolePolicy")


def test_execution_role_grants_only_named_models_and_vpc_interfaces(default_stack: Synthesis) -> None:
    statements = _role_policy(default_stack)
    assert render(statements["InvokeNamedEndpoints"]["Resource"]) == (
        "arn:TOKEN:sagemaker:TOKEN:TOKEN:endpoint/candidate-endpoint"
    )
    # A cross-region profile (by id or ARN) also needs its foundation model, in any Region it routes to.
    assert sorted(render(r) for r in statements["InvokeNamedBedrockModels"]["Resource"]) == [
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
    assert render(create["Resource"]) == "arn:TOKEN:ec2:TOKEN:TOKEN:network-interface/*"
    assert statements["EncryptJobOutputs"]["Action"] == ["kms:DescribeKey", "kms:Encrypt"]
    assert "Condition" not in statements["EncryptJobOutputs"]
    assert statements["PublishProcessingJobMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/ProcessingJobs"}
    }
    # The job role has data rights only: no control plane, no role passing.
    actions = {a for s in statements.values() for a in _as_list(s["Action"])}
    assert not {a for a in actions if a.startswith("sagemaker:Create") or a == "iam:PassRole"}


def test_pipeline_role_creates_only_fenced_jobs_and_passes_only_the_job_role(default_stack: Synthesis) -> None:
    statements = _policy(default_stack, "PlatformPipelineRolePolicy")
    create = statements["CreateFencedProcessingJobs"]
    assert create["Action"] == "sagemaker:CreateProcessingJob"
    assert render(create["Resource"]) == "arn:TOKEN:sagemaker:TOKEN:TOKEN:processing-job/pipelines-*"
    condition = create["Condition"]
    key = {"Fn::GetAtt": [_only_key(default_stack), "Arn"]}
    assert condition["ForAllValues:StringEquals"]["sagemaker:InstanceTypes"] == ["ml.m5.large", "ml.m5.xlarge"]
    assert [s["Ref"] for s in condition["ForAllValues:StringEquals"]["sagemaker:VpcSubnets"]] == sorted(
        default_stack.resources("AWS::EC2::Subnet")
    )
    (group,) = condition["ForAllValues:StringEquals"]["sagemaker:VpcSecurityGroupIds"]
    assert group["Fn::GetAtt"][0].startswith("PlatformNetworkJobSecurityGroup")
    assert condition["Null"] == {
        "sagemaker:InstanceTypes": "false", "sagemaker:VolumeKmsKey": "false", "sagemaker:VpcSubnets": "false",
        "sagemaker:VpcSecurityGroupIds": "false",
    }  # fmt: skip
    assert condition["ArnEquals"] == {"sagemaker:VolumeKmsKey": key}
    assert condition["ArnEqualsIfExists"] == {"sagemaker:OutputKmsKey": key}
    assert condition["NumericLessThanEquals"] == {"sagemaker:MaxRuntimeInSeconds": 86400}
    assert condition["Bool"] == {"sagemaker:InterContainerTrafficEncryption": "true"}
    (pass_role,) = [s for s in statements.values() if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    (job_role,) = [
        k for k, r in default_stack.resources("AWS::IAM::Role").items()
        if "data rights only" in r["Properties"].get("Description", "")
    ]  # fmt: skip
    assert pass_role["Resource"] == {"Fn::GetAtt": [job_role, "Arn"]}
    # The pipeline role reaches data only to read the Report step's property file.
    data_actions = {a for s in statements.values() for a in _as_list(s["Action"]) if a.startswith("s3:")}
    assert data_actions == {"s3:GetObject", "s3:ListBucket"}


def test_pushed_image_uri_grants_pull_on_its_repository_only(existing_vpc_stack: Synthesis) -> None:
    statements = _role_policy(existing_vpc_stack)
    assert render(statements["PullProcessingImage"]["Resource"]) == (
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
        body = json.loads(render(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]))
        defaults = {p["Name"]: p.get("DefaultValue") for p in body["Parameters"]}
        assert defaults == {
            "SpecUri": None, "OutputPath": None, "EvaluateBaseModel": False, "ProcessingImageUri": "TOKEN",
            "InstanceType": "ml.m5.xlarge", "ReportInstanceType": "ml.m5.large", "InstanceCount": 1,
        }  # fmt: skip
        arguments = body["Steps"][0]["Arguments"]
        assert arguments["RoleArn"] == "TOKEN"
        assert arguments["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "TOKEN"
        assert len(arguments["NetworkConfig"]["VpcConfig"]["Subnets"]) == 2
        assert pipeline["Properties"]["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 4}


def test_vpc_endpoints_and_security_groups(synthesis: Synthesis) -> None:
    endpoints = synthesis.resources("AWS::EC2::VPCEndpoint").values()
    services = sorted(_service(e) for e in endpoints)
    # The MLflow endpoint comes only with a tracking server (the existing-VPC stack has one).
    mlflow = ["experiments"] if synthesis.stack_name != "evalstack-dev" else []
    assert services == sorted([
        "bedrock-runtime", "ecr.api", "ecr.dkr", "logs", "s3", "sagemaker.api", "sagemaker.runtime", "secretsmanager",
        "sts", *mlflow,
    ])  # fmt: skip
    cidr = "10.60.0.0/16" if synthesis.stack_name == "evalstack-dev" else "10.20.0.0/16"
    for group in synthesis.resources("AWS::EC2::SecurityGroup").values():
        rules = group["Properties"].get("SecurityGroupIngress", []) + group["Properties"]["SecurityGroupEgress"]
        for rule in rules:
            # Egress of the groups without any is CDK's placeholder rule to 255.255.255.255/32 (no traffic).
            if rule.get("CidrIp") == "255.255.255.255/32":
                continue
            assert (rule["FromPort"], rule["ToPort"], rule["IpProtocol"], rule["CidrIp"]) == (443, 443, "tcp", cidr)
    for endpoint in synthesis.resources("AWS::EC2::VPCEndpoint").values():
        statements = {s["Sid"]: s for s in endpoint["Properties"]["PolicyDocument"]["Statement"]}
        service = _service(endpoint)
        s3_sids = ["EcrImageLayers", "OnlyThisAccount", *(["ModelArtifacts"] if mlflow else [])]
        assert sorted(statements) == (sorted(s3_sids) if service == "s3" else ["OnlyThisAccount"])
        for statement in statements.values():
            assert statement["Principal"] == {"AWS": "*"}
            assert statement["Condition"]["StringEquals"]["aws:PrincipalAccount"] == {"Ref": "AWS::AccountId"}
        same_account = "aws:ResourceAccount" in statements["OnlyThisAccount"]["Condition"]["StringEquals"]
        assert same_account == (
            service in ("s3", "sagemaker.api", "sagemaker.runtime", "logs", "secretsmanager")
        )
        expected = [MLFLOW_SERVER] if service == "experiments" else ["*"]
        assert _as_list(statements["OnlyThisAccount"]["Resource"]) == expected


def _service(endpoint: dict[str, Any]) -> str:
    # CDK names SageMaker MLflow's service aws.sagemaker.<region>.experiments, the others com.amazonaws.<region>.*.
    name = render(endpoint["Properties"]["ServiceName"])
    return name.removeprefix("com.amazonaws.TOKEN.").removeprefix("aws.sagemaker.TOKEN.")


def test_model_artifact_reads_are_exact_and_only_when_configured(
    default_stack: Synthesis, existing_vpc_stack: Synthesis
) -> None:
    optional = {"ReadModelArtifacts", "ListModelArtifactPrefixes", "TrackToMlflowServer", "DecryptModelArtifacts"}
    assert not optional & set(_role_policy(default_stack))
    assert not [e for e in default_stack.resources("AWS::EC2::VPCEndpoint").values() if _service(e) == "experiments"]
    statements = _role_policy(existing_vpc_stack)
    js = "arn:TOKEN:s3:::jumpstart-cache-prod-TOKEN"
    gated = "arn:TOKEN:s3:::jumpstart-private-cache-prod-TOKEN"
    objects = sorted(render(r) for r in _as_list(statements["ReadModelArtifacts"]["Resource"]))
    assert statements["ReadModelArtifacts"]["Action"] == "s3:GetObject"
    assert objects == sorted([
        "arn:TOKEN:s3:::team-models/llm/v3/model.tar.gz", "arn:TOKEN:s3:::team-models/uncompressed/llm-v4/*",
        f"{js}/models_manifest.json", f"{js}/*meta-textgeneration-llama-3-2-1b*",
        f"{gated}/*meta-textgeneration-llama-3-2-1b*",
    ])  # fmt: skip
    listing = statements["ListModelArtifactPrefixes"]
    assert listing["Action"] == "s3:ListBucket"
    assert sorted(render(r) for r in listing["Resource"]) == sorted(["arn:TOKEN:s3:::team-models", js, gated])
    assert listing["Condition"] == {
        "StringLike": {"s3:prefix": ["*meta-textgeneration-llama-3-2-1b*", "uncompressed/llm-v4/*"]}
    }
    assert statements["TrackToMlflowServer"]["Resource"] == MLFLOW_SERVER
    # No key given: no kms:Decrypt beyond the platform key's.
    assert "DecryptModelArtifacts" not in statements
    # The S3 endpoint lets exactly these through for this account (JumpStart's buckets are AWS-owned).
    (s3_endpoint,) = [e for e in existing_vpc_stack.resources("AWS::EC2::VPCEndpoint").values() if _service(e) == "s3"]
    allowed = {s["Sid"]: s for s in s3_endpoint["Properties"]["PolicyDocument"]["Statement"]}["ModelArtifacts"]
    assert allowed["Action"] == ["s3:GetObject", "s3:ListBucket"]
    resources = sorted(render(r) for r in allowed["Resource"])
    assert resources == sorted([*objects, "arn:TOKEN:s3:::team-models", js, gated])


def test_jumpstart_bucket_layout_matches_the_model_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    from evalstack.constructs import defaults
    from evalstack.models import jumpstart

    monkeypatch.delenv(jumpstart.BUCKET_ENV, raising=False)
    monkeypatch.delenv(jumpstart.GATED_BUCKET_ENV, raising=False)
    content, private = (b.format(region="eu-west-1") for b in defaults.JUMPSTART_BUCKETS)
    assert (content, private) == (jumpstart.content_bucket("eu-west-1"), jumpstart.gated_bucket("eu-west-1"))
    assert defaults.JUMPSTART_MANIFEST_KEY == jumpstart.MANIFEST_KEY


def test_new_vpc_is_isolated_with_flow_logs(default_stack: Synthesis, existing_vpc_stack: Synthesis) -> None:
    assert len(default_stack.resources("AWS::EC2::VPC")) == 1
    assert default_stack.resources("AWS::EC2::InternetGateway") == {}
    assert default_stack.resources("AWS::EC2::NatGateway") == {}
    assert len(default_stack.resources("AWS::EC2::FlowLog")) == 1
    assert len(default_stack.resources("Custom::VpcRestrictDefaultSG")) == 1
    assert existing_vpc_stack.resources("AWS::EC2::VPC") == {}
    vpc_ids = {e["Properties"]["VpcId"] for e in existing_vpc_stack.resources("AWS::EC2::VPCEndpoint").values()}
    assert vpc_ids == {"vpc-0123456789abcdef0"}


def test_lambdas_are_bounded_traced_and_have_dead_letter_queues(default_stack: Synthesis) -> None:
    functions = {
        f["Properties"]["Handler"]: f["Properties"]
        for k, f in default_stack.resources("AWS::Lambda::Function").items()
        if not k.startswith(CDK_PROVIDER)
    }
    assert sorted(functions) == ["lambdas.approval.handler", "lambdas.trigger.handler"]
    assert functions["lambdas.approval.handler"]["ReservedConcurrentExecutions"] == 1
    assert functions["lambdas.trigger.handler"]["ReservedConcurrentExecutions"] == 2
    topics = default_stack.resources("AWS::SNS::Topic")
    (alarm_topic,) = [k for k in topics if k.startswith("PlatformAlarmsTopic")]
    for props in functions.values():
        assert props["Runtime"] == "python3.14"
        assert props["Timeout"] <= 120 and props["MemorySize"] == 256
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert props["LoggingConfig"]["LogGroup"]["Ref"].startswith("Platform")
        assert "TargetArn" in props["DeadLetterConfig"] and "KmsKeyArn" in props
    # One failure lands once in its function's DLQ; the failure destination is the alarm topic.
    for config in default_stack.resources("AWS::Lambda::EventInvokeConfig").values():
        assert config["Properties"]["MaximumRetryAttempts"] == 2
        assert config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {"Ref": alarm_topic}
    for queue in default_stack.resources("AWS::SQS::Queue").values():
        assert "KmsMasterKeyId" in queue["Properties"]
    names = sorted(g["Properties"]["LogGroupName"] for g in default_stack.resources("AWS::Logs::LogGroup").values())
    assert names == [
        "/evalstack/evalstack-dev/evalstack-dev-benchmark-gate",
        "/evalstack/evalstack-dev/evalstack-dev-benchmark-trigger",
        "/evalstack/evalstack-dev/flow-logs",
    ]
    (key,) = default_stack.resources("AWS::KMS::Key").values()
    (logs_statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Sid"].startswith("Logs")]
    assert render(logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]) == (
        "arn:TOKEN:logs:TOKEN:TOKEN:log-group:/evalstack/evalstack-dev/*"
    )


def test_retry_queue_feeds_the_trigger_and_redrives_to_its_dead_letter_queue(default_stack: Synthesis) -> None:
    (mapping,) = default_stack.resources("AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["BatchSize"] == 1 and props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    retry_id = props["EventSourceArn"]["Fn::GetAtt"][0]
    retry = default_stack.resources("AWS::SQS::Queue")[retry_id]["Properties"]
    dlq = retry["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert dlq.startswith("PlatformContinuousEvaluationTriggerDeadLetterQueue")
    assert retry["RedrivePolicy"]["maxReceiveCount"] == 5
    assert retry["VisibilityTimeout"] == 720  # six function timeouts


def test_alarms_watch_dead_letters_errors_and_failed_evaluations(default_stack: Synthesis) -> None:
    alarms = default_stack.resources("AWS::CloudWatch::Alarm").values()
    metrics = sorted((a["Properties"].get("Namespace"), a["Properties"]["MetricName"]) for a in alarms)
    assert metrics == [
        ("AWS/Lambda", "Errors"), ("AWS/Lambda", "Errors"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Sagemaker/ModelBuildingPipeline", "ExecutionFailed"),
        ("AWS/Sagemaker/ModelBuildingPipeline", "ExecutionFailed"),
        ("AWS/Sagemaker/ModelBuildingPipeline", "ExecutionFailed"),
    ]  # fmt: skip
    for alarm in alarms:
        (action,) = alarm["Properties"]["AlarmActions"]
        assert action["Ref"].startswith("PlatformAlarmsTopic")


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
    for topic in default_stack.resources("AWS::SNS::Topic").values():
        assert "KmsMasterKeyId" in topic["Properties"]


def test_trigger_environment_carries_the_validated_template(default_stack: Synthesis) -> None:
    (trigger,) = [
        f for f in default_stack.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "lambdas.trigger.handler"
    ]  # fmt: skip
    env = trigger["Properties"]["Environment"]["Variables"]
    assert json.loads(env["SPEC_TEMPLATE"]) == EVALUATION
    assert env["PIPELINE_NAME"] == "evalstack-dev-benchmark"
    assert env["CONCURRENCY_PIPELINES"] == (
        "evalstack-dev-benchmark,evalstack-dev-custom-scorer,evalstack-dev-llm-as-judge"
    )
    assert env["MAX_CONCURRENT_EVALUATIONS"] == "10"
    # Never a person's decision: only pending packages are evaluated.
    assert env["CANDIDATE_STATUSES"] == "PendingManualApproval"
    assert render(env["CONTROL_URI"]) == "s3://TOKEN/control/evalstack-dev-benchmark"
    assert env["RETRY_QUEUE_URL"] == {"Ref": _retry_queue(default_stack)}
    (gate,) = [
        f for f in default_stack.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "lambdas.approval.handler"
    ]  # fmt: skip
    gate_env = gate["Properties"]["Environment"]["Variables"]
    for name in ("CONTROL_URI", "SPEC_TEMPLATE", "PIPELINE_NAME", "MODEL_PACKAGE_GROUP"):
        assert gate_env[name] == env[name], name
    assert gate_env["GATED_STATUSES"] == "PendingManualApproval"


def _retry_queue(synth: Synthesis) -> str:
    (logical_id,) = [k for k in synth.resources("AWS::SQS::Queue") if "RetryQueue" in k]
    return logical_id


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


def _object_grants(synth: Synthesis, action: str) -> dict[str, list[str]]:
    """Policy logical id -> the object-key patterns it allows ``action`` on (bucket part dropped)."""
    out: dict[str, list[str]] = {}
    for logical_id, policy in synth.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow" and action in _as_list(statement["Action"]):
                keys = [render(r).split("/", 1)[1] for r in _as_list(statement["Resource"]) if "/" in render(r)]
                out.setdefault(logical_id, []).extend(keys)
    return out


def test_job_writes_only_outputs_and_only_the_trigger_writes_control(default_stack: Synthesis) -> None:
    writes = _object_grants(default_stack, "s3:PutObject")
    (job,) = [k for k in writes if k.startswith("PlatformRolePolicy")]
    assert sorted(set(writes[job])) == sorted(["evaluations/*", *(f"evaluations/{k}" for k in REWRITTEN_OUTPUT_KEYS)])
    control_writers = [k for k, keys in writes.items() if any(key.startswith("control/") for key in keys)]
    assert len(control_writers) == 1 and control_writers[0].startswith("PlatformContinuousEvaluationTriggerRole")
    assert writes[control_writers[0]] == ["control/evalstack-dev-benchmark/*"]
    reads = _object_grants(default_stack, "s3:GetObject")
    assert sorted(reads[job]) == ["control/evalstack-dev-benchmark/specs/*", "datasets/*", "evaluations/*"]
    (gate,) = [k for k in reads if k.startswith("PlatformApprovalGateRole")]
    assert sorted(reads[gate]) == ["control/evalstack-dev-benchmark/*", "evaluations/evalstack-dev-benchmark/*"]


_ACTION = re.compile(r"^(?:[a-z0-9-]+:)?[A-Z][A-Za-z]+\*?$")  # a trailing * in Deny rows


def _doc_table(section: str) -> dict[str, set[str]]:
    """The IAM table of one docs/deploy.md section: statement id (or "(grant)") -> the actions listed."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    body = text.split(f"### {section}", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("statement", "---"):
            continue
        prefix, actions = "", set()
        # Conditions follow " if "; abbreviated names take the service prefix of the name before them.
        for token in re.findall(r"`([^`]+)`", cells[1].split(" if ")[0]):
            if _ACTION.match(token):
                prefix = token.split(":")[0] if ":" in token else prefix
                actions.add(token if ":" in token else f"{prefix}:{token}")
        rows.setdefault(cells[0], set()).update(actions)
    return rows


@pytest.mark.parametrize(("section", "policy"), [("Job role", "PlatformRolePolicy"),
                                                 ("Pipeline role", "PlatformPipelineRolePolicy")])  # fmt: skip
def test_deploy_doc_iam_tables_match_the_template(
    default_stack: Synthesis, existing_vpc_stack: Synthesis, section: str, policy: str
) -> None:
    documented = _doc_table(section)
    # The existing-VPC stack synthesizes the optional model-artifact and MLflow rows.
    optional = {k: v for k, v in _policy(existing_vpc_stack, policy).items() if not k.startswith("#")}
    statements = _policy(default_stack, policy)
    named = {sid: set(_as_list(s["Action"])) for sid, s in statements.items() if not sid.startswith("#")}
    granted = {a for sid, s in statements.items() if sid.startswith("#") for a in _as_list(s["Action"])}
    assert {sid: documented.get(sid) for sid in named} == named
    assert documented["(grant)"] == granted
    # Rows the default stack does not synthesize are the optional grants; the other stack shows most of them.
    extra = set(documented) - set(named) - {"(grant)"}
    assert {sid: documented[sid] for sid in extra & set(optional)} == {
        sid: set(_as_list(optional[sid]["Action"])) for sid in extra & set(optional)
    }
    assert extra - set(optional) <= {"ReadModelApiKeys", "DecryptModelArtifacts"}
    assert set(optional) <= set(documented)


def _keys(statement: dict[str, Any], field: str = "Resource") -> list[str]:
    return sorted(render(r).split("/", 1)[1] for r in _as_list(statement[field]))


def test_job_outputs_are_write_once_and_never_deleted(default_stack: Synthesis) -> None:
    statements = _role_policy(default_stack)
    allowed = {a for s in statements.values() if s["Effect"] == "Allow" for a in _as_list(s["Action"])}
    assert {a for a in allowed if a.startswith(("s3:Delete", "s3:PutObjectVersion", "s3:PutObjectAcl"))} == set()
    puts = {
        sid: (_keys(s), s.get("Condition"))
        for sid, s in statements.items()
        if s["Effect"] == "Allow" and "s3:PutObject" in _as_list(s["Action"])
    }
    rewritten = sorted(f"evaluations/{k}" for k in REWRITTEN_OUTPUT_KEYS)
    assert puts == {
        # PutObject and CompleteMultipartUpload only with If-None-Match: *: an object is never replaced.
        "CreateOutputsOnce": (["evaluations/*"], {"StringEquals": {"s3:if-none-match": "*"}}),
        # CreateMultipartUpload and UploadPart take no condition header (they create no object).
        "UploadOutputParts": (["evaluations/*"], {"Bool": {"s3:ObjectCreationOperation": "false"}}),
        "RewriteProgressAndReportOutputs": (rewritten, None),
    }
    deny = statements["DenyJobDeletesAndVersionChanges"]
    assert (deny["Effect"], _keys(deny)) == ("Deny", ["*"])
    assert sorted(deny["Action"]) == ["s3:DeleteObject*", "s3:PutObjectAcl", "s3:PutObjectVersion*"]
    # The same rules as explicit Denies in the bucket policy, for the job role: they hold whatever
    # policy is attached to the role later.
    policies = default_stack.resources("AWS::IAM::Policy")
    (job_policy,) = [p for k, p in policies.items() if k.startswith("PlatformRolePolicy")]
    ((role_id,),) = [r.values() for r in job_policy["Properties"]["Roles"]]
    denials = {
        s["Sid"]: s
        for _type, _id, s in _statements(default_stack)
        if _type == "AWS::S3::BucketPolicy" and s.get("Sid") in JOB_WRITE_ONCE_DENIALS
    }
    for statement in denials.values():
        assert statement["Effect"] == "Deny"
        assert statement["Principal"] == {"AWS": {"Fn::GetAtt": [role_id, "Arn"]}}
    rewrites = denials["DenyJobRewritesOfOutputs"]
    assert (rewrites["Action"], _keys(rewrites, "NotResource")) == ("s3:PutObject", rewritten)
    # An unconditional PutObject or CompleteMultipartUpload (the object-creating calls).
    assert rewrites["Condition"] == {
        "Null": {"s3:if-none-match": "true"},
        "Bool": {"s3:ObjectCreationOperation": "true"},
    }
    bucket_deny = denials["DenyJobDeletesAndVersionChanges"]
    assert (sorted(bucket_deny["Action"]), _keys(bucket_deny)) == (sorted(deny["Action"]), ["*"])


def test_only_rewritten_by_design_outputs_are_exempt_from_write_once() -> None:
    """The exemptions match the keys the engine and SageMaker rewrite, and none of the files the gate,
    the report or the merge read."""
    output = "s3://bucket/evaluations/pipe/token/exec1"

    def exempt(uri: str) -> bool:
        key = uri.removeprefix("s3://bucket/")
        return any(fnmatch.fnmatchcase(key, f"evaluations/{pattern}") for pattern in REWRITTEN_OUTPUT_KEYS)

    assert exempt(progress_uri(output, "candidate", 0, 2)) and exempt(progress_uri(output, "base", 1, 2))
    report_outputs = [
        output_config["S3Output"]["S3Uri"]["Std:Join"]["Values"][-1]
        for step in iter_steps(json.loads(definition_json("benchmark"))["Steps"])
        for output_config in step["Arguments"].get("ProcessingOutputConfig", {}).get("Outputs", [])
    ]
    assert sorted(report_outputs) == sorted([REPORT_STEP, REPORT_WITH_BASE_STEP])
    assert all(exempt(f"{output}/{name}/evaluation.json") for name in report_outputs)
    written_once = [
        shard_uri(output, "candidate", 0, 1), f"{output}/results.json", f"{output}/comparison.json",
        f"{output}/base/results.json", f"{output}/samples.jsonl", f"{output}/report.html", f"{output}/spec.json",
        f"{output}/timings/candidate-shard-00000-of-00001.json",
    ]  # fmt: skip
    assert [uri for uri in written_once if exempt(uri)] == []
