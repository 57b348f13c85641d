"""Composing the constructs into an existing stack with bring-your-own resources, and early errors."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from evalstack.constructs import (
    ContinuousEvaluation,
    EvaluationAlarms,
    EvaluationBucket,
    EvaluationKey,
    EvaluationPipeline,
    EvaluationRole,
    PipelineRole,
)
from evalstack.constructs.app import platform_props
from evalstack.constructs.continuous import validate_template
from evalstack.constructs.pipeline import image_requirements
from evalstack.pipeline.definition import iter_steps
from evalstack.spec import SpecError
from tests.support.cdk import render

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MODELS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab"
MLFLOW_SERVER = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/evalstack:1.0.0"


@pytest.fixture(scope="module")
def byo_template() -> Template:
    """An existing team stack that brings its key and bucket and grants a CI role the start permission."""
    app = cdk.App()
    stack = cdk.Stack(app, "TeamStack", env=cdk.Environment(account="123456789012", region="us-east-1"))
    key = EvaluationKey(stack, "Key", existing_key=kms.Key.from_key_arn(stack, "TeamKey", KEY_ARN))
    bucket = EvaluationBucket(
        stack, "Bucket", key=key.key, existing_bucket=s3.Bucket.from_bucket_name(stack, "TeamBucket", "team-evals")
    )
    models_key = kms.Key.from_key_arn(stack, "ModelsKey", MODELS_KEY_ARN)
    role = EvaluationRole(
        stack, "Role", bucket=bucket, dataset_prefixes=["datasets/qa/"],
        model_artifact_uris=["s3://team-models/llm/v3/model.tar.gz"], model_artifact_key=models_key,
    )  # fmt: skip
    pipeline = EvaluationPipeline(
        stack, "Pipeline", eval_type="custom_scorer", role=role, pipeline_role=_pipeline_role(stack, role, bucket),
        key=key.key, image_uri=IMAGE, pipeline_name="team-eval",
    )  # fmt: skip
    ci = iam.Role(stack, "CiRole", assumed_by=iam.AccountRootPrincipal())
    pipeline.grant_start_execution(ci)
    pipeline.grant_stop_execution(ci)
    return Template.from_stack(stack)


def _pipeline_role(stack: cdk.Stack, role: EvaluationRole, bucket: EvaluationBucket) -> PipelineRole:
    return PipelineRole(
        stack, "PipelineRole", job_role=role, key=bucket.key, bucket=bucket,
        instance_types=["ml.m5.xlarge", "ml.m5.large"],
    )  # fmt: skip


def test_bring_your_own_key_and_bucket_creates_neither(byo_template: Template) -> None:
    byo_template.resource_count_is("AWS::KMS::Key", 0)
    byo_template.resource_count_is("AWS::S3::Bucket", 0)
    byo_template.has_resource_properties(
        "AWS::SageMaker::Pipeline", {"PipelineName": "team-eval", "RoleArn": Match.any_value()}
    )


def test_execution_role_reads_only_the_named_dataset_prefix(byo_template: Template) -> None:
    byo_template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "s3:GetObject",
                                "Resource": {
                                    "Fn::Join": [
                                        "",
                                        ["arn:", {"Ref": "AWS::Partition"}, ":s3:::team-evals/datasets/qa/*"],
                                    ]
                                },
                            }
                        ),
                        Match.object_like(
                            {"Action": "s3:ListBucket", "Condition": {"StringLike": {"s3:prefix": ["datasets/qa/*"]}}}
                        ),
                        Match.object_like({"Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": KEY_ARN}),
                    ]
                )
            }
        },
    )


def test_grant_start_execution_is_scoped_to_the_pipeline(byo_template: Template) -> None:
    byo_template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": [
                                "sagemaker:DescribePipeline",
                                "sagemaker:ListPipelineExecutions",
                                "sagemaker:StartPipelineExecution",
                            ],
                            "Effect": "Allow",
                            "Resource": {
                                "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                                                  ":sagemaker:us-east-1:123456789012:pipeline/team-eval"]]
                            },
                        },
                    ]
                )
            }
        },
    )  # fmt: skip


def _parts() -> tuple[cdk.Stack, EvaluationBucket, EvaluationRole, PipelineRole]:
    stack = cdk.Stack(cdk.App(), "S")
    key = EvaluationKey(stack, "Key")
    bucket = EvaluationBucket(stack, "Bucket", key=key.key)
    role = EvaluationRole(stack, "Role", bucket=bucket)
    return stack, bucket, role, _pipeline_role(stack, role, bucket)


def test_pipeline_needs_exactly_one_image_source() -> None:
    stack, bucket, role, pipeline_role = _parts()
    with pytest.raises(ValueError, match="give exactly one of image_uri or image"):
        EvaluationPipeline(stack, "P", eval_type="benchmark", role=role, pipeline_role=pipeline_role, key=bucket.key)


def test_pipeline_refuses_settings_its_pipeline_role_would_deny() -> None:
    stack, bucket, role, pipeline_role = _parts()
    common = {"eval_type": "benchmark", "role": role, "pipeline_role": pipeline_role, "key": bucket.key,
              "image_uri": IMAGE}  # fmt: skip
    with pytest.raises(ValueError, match=r"instance_type: \['ml.p4d.24xlarge'\] not in the pipeline role's"):
        EvaluationPipeline(stack, "P1", instance_type="ml.p4d.24xlarge", **common)
    with pytest.raises(ValueError, match="max_runtime_seconds: 90000 exceeds the pipeline role's limit 86400"):
        EvaluationPipeline(stack, "P2", max_runtime_seconds=90000, **common)


def test_continuous_evaluation_validates_the_template_at_synth_time() -> None:
    stack, bucket, role, pipeline_role = _parts()
    pipeline = EvaluationPipeline(
        stack, "P", eval_type="benchmark", role=role, pipeline_role=pipeline_role, key=bucket.key, image_uri=IMAGE
    )
    alarms = EvaluationAlarms(stack, "Alarms", key=bucket.key)
    with pytest.raises(SpecError, match=r"ContinuousEvaluation.evaluation: benchmark: .*'MMLX'"):
        ContinuousEvaluation(
            stack, "C", pipeline=pipeline, bucket=bucket, key=bucket.key, alarms=alarms, model_package_group="g",
            evaluation={"eval_type": "benchmark", "benchmark": "MMLX"},
        )  # fmt: skip


def test_mlflow_tracking_is_refused_without_the_platform_tracking_server() -> None:
    server = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    template = {"eval_type": "benchmark", "benchmark": "MMLU", "mlflow": {"resource_arn": server}}
    with pytest.raises(ValueError, match=r"mlflow tracking needs mlflow.resource_arn to be the platform's"):
        validate_template(template, "g")
    with pytest.raises(ValueError, match=r"configured 'arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking"):
        validate_template({**template, "mlflow": {"experiment_name": "x"}}, "g", server)
    assert '"resource_arn":"' + server in validate_template(template, "g", server)


@pytest.mark.parametrize("name", ["base_model", "version", "model_package_group"])
def test_continuous_evaluation_refuses_fields_the_trigger_would_refuse(name: str) -> None:
    evaluation = {"eval_type": "benchmark", "benchmark": "MMLU", name: {"version": 1}.get(name, "x")}
    with pytest.raises(ValueError, match=rf"ContinuousEvaluation.evaluation: field '{name}' cannot be set"):
        validate_template(evaluation, "g")


def test_image_requirements_come_from_the_distribution_metadata() -> None:
    import importlib.metadata

    requirements = image_requirements(("engine",))
    engine = [r.split(";")[0].strip() for r in importlib.metadata.requires("evalstack") if 'extra == "engine"' in r]
    assert requirements == sorted(engine) and any(r.startswith("numpy") for r in requirements)
    assert not [r for r in requirements if r.startswith(("aws-cdk-lib", "cdk-nag", "pytest"))]
    with pytest.raises(ValueError, match=r"extras \['no-such-extra'\] are not defined by evalstack"):
        image_requirements(("engine", "no-such-extra"))


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"vpc": "public"}, r"context vpc: must be one of \['isolated', 'existing', 'none'\], got 'public'"),
        ({"modelPackageGroup": "g"}, r"context evaluation: a JSON object \(the spec template\) is required"),
        ({"modelPackageGroup": "g", "evaluation": "{not json"}, r"context evaluation: invalid JSON"),
    ],
)
def test_bad_context_is_named(context: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_props(cdk.App(context=context))


def _policy_statements(template: Template) -> list[dict]:
    return [
        s
        for p in template.find_resources("AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_grant_stop_execution_is_scoped_to_the_pipelines_executions(byo_template: Template) -> None:
    stops = [s for s in _policy_statements(byo_template) if "sagemaker:StopPipelineExecution" in s["Action"]]
    assert len(stops) == 1
    assert stops[0]["Action"] == ["sagemaker:RetryPipelineExecution", "sagemaker:StopPipelineExecution"]
    assert "pipeline/team-eval/execution/*" in str(stops[0]["Resource"])


def test_platform_grants_a_ci_role_exactly_what_it_needs() -> None:
    from evalstack.constructs import ApprovalThresholds, ContinuousEvaluationSettings, EvaluationPlatform

    app = cdk.App()
    stack = cdk.Stack(app, "CiStack", env=cdk.Environment(account="123456789012", region="us-east-1"))
    continuous = ContinuousEvaluationSettings(
        model_package_group="team-llms",
        evaluation={"eval_type": "benchmark", "benchmark": "MMLU"},
        thresholds=ApprovalThresholds(metric="acc", min_score=0.5),
    )
    platform = EvaluationPlatform(
        stack, "Platform", eval_types=["benchmark"], use_vpc=False, image_uri=IMAGE, continuous=continuous
    )
    ci = iam.Role(stack, "CiRole", assumed_by=iam.AccountRootPrincipal())
    platform.grant_start_executions(ci)
    platform.approval_gate.grant_subscribe(ci)
    policies = Template.from_stack(stack).find_resources("AWS::IAM::Policy")
    # Without a VPC the pipeline role's conditions carry no network keys, which the jobs could not satisfy.
    (create,) = [
        s for p in policies.values()
        for s in p["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "CreateFencedProcessingJobs"
    ]  # fmt: skip
    assert "sagemaker:VpcSubnets" not in create["Condition"]["Null"] and "Bool" not in create["Condition"]
    statements = [
        s
        for p in policies.values()
        if "CiRole" in str(p["Properties"]["Roles"])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {
        "sagemaker:StartPipelineExecution",
        "sagemaker:DescribePipelineExecution",
        "ssm:GetParameter",
        "sns:Subscribe",
    } <= actions
    # The pipelines carry their roles: starting one passes none.
    assert "iam:PassRole" not in actions
    assert not any(a == "*" or a.endswith(":*") for a in actions)


def test_platform_forwards_the_props_of_its_parts() -> None:
    from aws_cdk import RemovalPolicy
    from aws_cdk import aws_sns as sns

    from evalstack.constructs import ApprovalThresholds, ContinuousEvaluationSettings, EvaluationPlatform

    app = cdk.App()
    stack = cdk.Stack(app, "Forwarding")
    job_role = iam.Role.from_role_arn(stack, "JobRole", "arn:aws:iam::123456789012:role/team-jobs", mutable=True)
    approvals = sns.Topic.from_topic_arn(stack, "Approvals", "arn:aws:sns:us-east-1:123456789012:team-approvals")
    EvaluationPlatform(
        stack, "Platform", stage="qa", name_prefix="team-evals", eval_types=["benchmark"], use_vpc=False,
        image_uri=IMAGE, removal_policy=RemovalPolicy.DESTROY, volume_size_gb=100, max_runtime_seconds=3600,
        instance_type="ml.g5.xlarge", report_instance_type="ml.t3.medium", existing_role=job_role,
        create_outputs=False, key_pending_window=cdk.Duration.days(7),
        continuous=ContinuousEvaluationSettings(
            model_package_group="g", evaluation={"eval_type": "benchmark", "benchmark": "MMLU"},
            schedule_timezone="Asia/Tokyo", existing_topic=approvals,
            thresholds=ApprovalThresholds(metric="accuracy", min_score=0.5),
        ),
    )  # fmt: skip
    # A second platform in its own stack: the bucket's dataset prefix reaches the job role's read grant.
    datasets = cdk.Stack(app, "Datasets")
    EvaluationPlatform(
        datasets, "Platform", eval_types=["custom_scorer"], use_vpc=False, image_uri=IMAGE, dataset_prefix="corpora/"
    )
    template = Template.from_stack(stack).to_json()
    resources = template["Resources"]
    assert "Outputs" not in template
    (key,) = [r for r in resources.values() if r["Type"] == "AWS::KMS::Key"]
    assert key["Properties"]["PendingWindowInDays"] == 7
    (pipeline,) = [r for r in resources.values() if r["Type"] == "AWS::SageMaker::Pipeline"]
    assert pipeline["Properties"]["PipelineName"] == "team-evals-benchmark"
    body = json.loads(render(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]))
    defaults = {p["Name"]: p.get("DefaultValue") for p in body["Parameters"]}
    assert (defaults["InstanceType"], defaults["ReportInstanceType"]) == ("ml.g5.xlarge", "ml.t3.medium")
    for step in iter_steps(body["Steps"]):
        if step["Type"] == "Processing":
            arguments = step["Arguments"]
            assert arguments["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] == 100
            assert arguments["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
            # The brought-in job role runs the jobs; no job role is created.
            assert arguments["RoleArn"] == "arn:aws:iam::123456789012:role/team-jobs"
    descriptions = [r["Properties"].get("Description", "") for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
    assert not [d for d in descriptions if "data rights only" in d]
    for kind in ("AWS::KMS::Key", "AWS::S3::Bucket", "AWS::Logs::LogGroup"):
        policies = {r["DeletionPolicy"] for r in resources.values() if r["Type"] == kind}
        assert policies == {"Delete"}, kind
    groups = sorted(r["Properties"]["LogGroupName"] for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup")
    assert groups == [
        "/evalstack/team-evals/team-evals-benchmark-gate", "/evalstack/team-evals/team-evals-benchmark-trigger"
    ]
    (schedule,) = [r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"]
    assert schedule["Properties"]["ScheduleExpressionTimezone"] == "Asia/Tokyo"
    # Decisions go to the brought-in topic: the only topic created is the alarm topic.
    topics = [r for r in resources.values() if r["Type"] == "AWS::SNS::Topic"]
    assert [t["Properties"]["DisplayName"] for t in topics] == ["evalstack operations"]
    gate_env = next(
        r["Properties"]["Environment"]["Variables"] for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == "lambdas.approval.handler"
    )  # fmt: skip
    assert gate_env["TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:team-approvals"
    names = sorted(r["Properties"]["Name"] for r in resources.values() if r["Type"] == "AWS::SSM::Parameter")
    assert names[0] == "/evalstack/qa/kms-key-arn"

    # The second platform (see above).
    policies = [
        json.dumps(r["Properties"]["PolicyDocument"])
        for r in Template.from_stack(datasets).to_json()["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
    ]  # fmt: skip
    assert any("corpora/*" in policy and "s3:GetObject" in policy for policy in policies)
    assert not any("datasets/*" in policy for policy in policies)


def test_job_writes_are_write_once_with_a_bucket_whose_policy_is_not_ours(byo_template: Template) -> None:
    """An imported bucket: no bucket policy of ours, so the role's own policy carries the write-once rules."""
    byo_template.resource_count_is("AWS::S3::BucketPolicy", 0)
    statements = _policy_statements(byo_template)
    by_sid = {s["Sid"]: s for s in statements if "Sid" in s}
    assert by_sid["CreateOutputsOnce"]["Condition"] == {"StringEquals": {"s3:if-none-match": "*"}}
    assert by_sid["UploadOutputParts"]["Condition"] == {"Bool": {"s3:ObjectCreationOperation": "false"}}
    deny = by_sid["DenyJobDeletesAndVersionChanges"]
    assert deny["Effect"] == "Deny"
    assert sorted(deny["Action"]) == ["s3:DeleteObject*", "s3:PutObjectAcl", "s3:PutObjectVersion*"]
    unconditional_puts = sorted(
        render(resource).rsplit("team-evals/", 1)[1]
        for s in statements
        if s["Effect"] == "Allow" and "s3:PutObject" in _listed(s["Action"]) and "Condition" not in s
        for resource in _listed(s["Resource"])
    )
    assert unconditional_puts == [
        "evaluations/*/Report/evaluation.json", "evaluations/*/ReportWithBase/evaluation.json",
        "evaluations/*/progress/*/shard-*-of-*.json",
    ]  # fmt: skip


def _listed(value: object) -> list:
    return value if isinstance(value, list) else [value]


def test_only_a_bucket_policy_of_the_roles_stack_names_the_job_role() -> None:
    stack, _bucket, role, _pipeline = _parts()
    assert role.bucket_policy_denies
    # A bucket of another stack: naming the role in its policy would make the stacks depend on each other.
    data = cdk.Stack(stack.node.root, "Data")
    shared = EvaluationBucket(data, "Bucket", key=EvaluationKey(data, "Key").key)
    platform = cdk.Stack(stack.node.root, "Platform")
    other = EvaluationRole(platform, "Role", bucket=EvaluationBucket(platform, "Shared", existing_bucket=shared.bucket))
    assert not other.bucket_policy_denies


def test_model_artifacts_of_a_package_are_read_and_decrypted_through_s3_only(byo_template: Template) -> None:
    statements = {s["Sid"]: s for s in _policy_statements(byo_template) if "Sid" in s}
    assert statements["ReadModelArtifacts"]["Action"] == "s3:GetObject"
    assert render(statements["ReadModelArtifacts"]["Resource"]) == "arn:TOKEN:s3:::team-models/llm/v3/model.tar.gz"
    # One object, no prefix: nothing to list.
    assert "ListModelArtifactPrefixes" not in statements
    assert statements["DecryptModelArtifacts"] == {
        "Sid": "DecryptModelArtifacts", "Action": "kms:Decrypt", "Effect": "Allow", "Resource": MODELS_KEY_ARN,
        "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"model_artifact_uris": ["team-models/llm/"]}, r"model_artifact_uris\[0\]: 'team-models/llm/' must be s3://"),
        ({"model_artifact_uris": ["s3://a/m.tar.gz", "s3://team-models"]}, r"model_artifact_uris\[1\]"),
        ({"model_artifact_uris": ["s3://team-models/llm/*"]}, r"without wildcards"),
        ({"jumpstart_models": ["jumpstart:meta-llama-3-2-1b"]}, r"jumpstart_models\[0\]: .* no 'jumpstart:'"),
        ({"jumpstart_models": ["*"]}, r"jumpstart_models\[0\]: '\*' is not a JumpStart model id"),
    ],
)
def test_bad_model_artifact_props_are_named(props: dict, message: str) -> None:
    stack = cdk.Stack(cdk.App(), "S")
    bucket = EvaluationBucket(stack, "Bucket", key=EvaluationKey(stack, "Key").key)
    with pytest.raises(ValueError, match=message):
        EvaluationRole(stack, "Role", bucket=bucket, **props)


def test_mlflow_endpoint_only_with_a_tracking_server_and_endpoints() -> None:
    from evalstack.constructs import EvaluationNetwork
    from evalstack.constructs.network import MLFLOW_ENDPOINT

    stack = cdk.Stack(cdk.App(), "S")
    key = EvaluationKey(stack, "Key").key
    assert MLFLOW_ENDPOINT not in EvaluationNetwork(stack, "Plain", key=key).endpoints
    tracked = EvaluationNetwork(stack, "Tracked", key=key, mlflow_tracking_server_arn=MLFLOW_SERVER)
    assert MLFLOW_ENDPOINT in tracked.endpoints and "S3" in tracked.endpoints
    none = EvaluationNetwork(stack, "NoEndpoints", key=key, endpoints=(), mlflow_tracking_server_arn=MLFLOW_SERVER)
    assert none.endpoints == {}
    skipped = EvaluationNetwork(
        stack, "Skipped", key=key, mlflow_tracking_server_arn=MLFLOW_SERVER, skip_endpoints=[MLFLOW_ENDPOINT]
    )
    assert MLFLOW_ENDPOINT not in skipped.endpoints and "S3" in skipped.endpoints
    with pytest.raises(ValueError, match=r"endpoints: SageMakerMlflow needs mlflow_tracking_server_arn"):
        EvaluationNetwork(stack, "Bad", key=key, endpoints=[MLFLOW_ENDPOINT])
