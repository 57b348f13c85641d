"""A platform team's CDK app composing the evalstack constructs the way issue 9 describes.

Per stage (Dev, Prod): a data stack (key, bucket) and a network stack (VPC) that the platform stack
references across stacks; two platforms on that one VPC (the second skips the endpoints the first
made, brings an imported key and evaluates a second model package group); and a CI stack whose role
is granted start rights on both. The cdk-nag packs are registered on the app. There is no
acknowledgement anywhere in this file: whatever the library's resources need, it brings itself.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import Construct

from evalstack.constructs import (
    ApprovalThresholds,
    ContinuousEvaluationSettings,
    EvaluationBucket,
    EvaluationKey,
    EvaluationNetwork,
    EvaluationPlatform,
)

ACCOUNT = "123456789012"
REGION = "us-east-1"
# The stacks are environment-agnostic (Fn::GetAZs instead of looked-up zones; synth stays offline).
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/evalstack:1.0.0"
# A key another team administers: evalstack cannot edit its policy and says so at synth time.
IMPORTED_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
STAGES = ("Dev", "Prod")
LLM_GROUP = "team-llm-models"
VISION_GROUP = "team-vision-models"


class DataStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.key = EvaluationKey(self, "Key").key
        self.bucket = EvaluationBucket(self, "Data", key=self.key).bucket


class NetworkStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # The network team's VPC; the platforms add their endpoints to it from their own stack.
        self.vpc = EvaluationNetwork(self, "Network", key=key, endpoints=(), name_prefix="team-network").vpc


class PlatformStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, env_name: str, data: DataStack,
                 network: NetworkStack, **kwargs) -> None:  # fmt: skip
        super().__init__(scope, construct_id, **kwargs)
        self.llm = EvaluationPlatform(
            self,
            "Llm",
            stage=env_name,
            existing_vpc=network.vpc,
            existing_bucket=data.bucket,  # its own key (the data stack's) is used
            image_uri=IMAGE,
            bedrock_models=["anthropic.claude-3-haiku-20240307-v1:0"],
            continuous=ContinuousEvaluationSettings(
                model_package_group=LLM_GROUP,
                evaluation={"eval_type": "benchmark", "benchmark": "MMLU", "subtasks": ["anatomy"]},
                thresholds=ApprovalThresholds(metric="accuracy", min_score=0.5),
            ),
        )
        self.vision = EvaluationPlatform(
            self,
            "Vision",
            stage=f"{env_name}-vision",
            eval_types=["custom_scorer"],
            existing_vpc=network.vpc,
            create_endpoints=False,  # the Llm platform made them on this VPC
            existing_key=kms.Key.from_key_arn(self, "ImportedKey", IMPORTED_KEY_ARN),
            image_uri=IMAGE,
            report_instance_type="ml.t3.medium",
            continuous=ContinuousEvaluationSettings(
                model_package_group=VISION_GROUP,
                evaluation={"eval_type": "custom_scorer", "metrics": ["rouge"],
                            "dataset": {"uri": "s3://team-evals/datasets/qa/test.jsonl"}},
                schedule="cron(0 2 * * ? *)",
                schedule_timezone="Europe/Berlin",
                thresholds=ApprovalThresholds(metric="rouge1", min_score=0.4),
            ),
            create_outputs=False,
        )  # fmt: skip


class CiStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, platforms: PlatformStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.role = iam.Role(self, "CiRole", assumed_by=iam.AccountRootPrincipal(), description="team CI")
        platforms.llm.grant_start_executions(self.role)
        platforms.vision.grant_start_executions(self.role)


class TeamStage(cdk.Stage):
    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        name = construct_id.lower()
        self.data = DataStack(self, "Data")
        self.network = NetworkStack(self, "Network", key=self.data.key)
        self.platform = PlatformStack(self, "Platform", env_name=name, data=self.data, network=self.network)
        self.ci = CiStack(self, "Ci", platforms=self.platform)


def build(outdir: Path) -> tuple[cdk.App, dict[str, TeamStage]]:
    app = cdk.App(
        outdir=str(outdir),
        context={
            "@aws-cdk/core:validationReportJson": True,
            # docs/deploy.md: log delivery to the access-log bucket by bucket policy, not an ACL.
            "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
            "@aws-cdk/core:defaultCrossStackReferences": "strong",
        },
    )
    stages = {name: TeamStage(app, name) for name in STAGES}
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    return app, stages
