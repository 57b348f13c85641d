"""Composing the constructs into an existing stack with bring-your-own resources, and early errors."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from evalstack.constructs import (
    ContinuousEvaluation,
    EvaluationBucket,
    EvaluationKey,
    EvaluationPipeline,
    EvaluationRole,
    repository_image,
)
from evalstack.constructs.app import platform_props
from evalstack.constructs.continuous import validate_template
from evalstack.spec import SpecError

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
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
    role = EvaluationRole(stack, "Role", bucket=bucket, dataset_prefixes=["datasets/qa/"])
    pipeline = EvaluationPipeline(
        stack, "Pipeline", eval_type="custom_scorer", role=role, key=key.key, image_uri=IMAGE, pipeline_name="team-eval"
    )
    ci = iam.Role(stack, "CiRole", assumed_by=iam.AccountRootPrincipal())
    pipeline.grant_start_execution(ci)
    pipeline.grant_stop_execution(ci)
    role.grant_pass_role(ci)
    return Template.from_stack(stack)


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
                        Match.object_like(
                            {"Action": "iam:PassRole",
                             "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}}
                        ),
                    ]
                )
            }
        },
    )  # fmt: skip


def test_pipeline_needs_exactly_one_image_source() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    key = EvaluationKey(stack, "Key")
    bucket = EvaluationBucket(stack, "Bucket", key=key.key)
    role = EvaluationRole(stack, "Role", bucket=bucket)
    with pytest.raises(ValueError, match="give exactly one of image_uri or image"):
        EvaluationPipeline(stack, "P", eval_type="benchmark", role=role, key=key.key)


def test_continuous_evaluation_validates_the_template_at_synth_time() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    key = EvaluationKey(stack, "Key")
    bucket = EvaluationBucket(stack, "Bucket", key=key.key)
    role = EvaluationRole(stack, "Role", bucket=bucket)
    pipeline = EvaluationPipeline(stack, "P", eval_type="benchmark", role=role, key=key.key, image_uri=IMAGE)
    with pytest.raises(SpecError, match=r"ContinuousEvaluation.evaluation: benchmark: .*'MMLX'"):
        ContinuousEvaluation(
            stack, "C", pipeline=pipeline, bucket=bucket, key=key.key, model_package_group="g",
            evaluation={"eval_type": "benchmark", "benchmark": "MMLX"},
        )  # fmt: skip


@pytest.mark.parametrize("name", ["base_model", "version", "model_package_group"])
def test_continuous_evaluation_refuses_fields_the_trigger_would_refuse(name: str) -> None:
    evaluation = {"eval_type": "benchmark", "benchmark": "MMLU", name: {"version": 1}.get(name, "x")}
    with pytest.raises(ValueError, match=rf"ContinuousEvaluation.evaluation: field '{name}' cannot be set"):
        validate_template(evaluation, "g")


def test_repository_image_needs_a_dockerfile(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_directory: no Dockerfile in"):
        repository_image(cdk.Stack(cdk.App(), "S"), "Image", tmp_path)


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
    statements = [
        s
        for p in Template.from_stack(stack).find_resources("AWS::IAM::Policy").values()
        if "CiRole" in str(p["Properties"]["Roles"])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {
        "sagemaker:StartPipelineExecution",
        "sagemaker:DescribePipelineExecution",
        "iam:PassRole",
        "ssm:GetParameter",
        "sns:Subscribe",
    } <= actions
    assert not any(a == "*" or a.endswith(":*") for a in actions)
