"""EvaluationPipeline: one AWS::SageMaker::Pipeline whose body is evalstack's definition builder output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.constructs.network import EvaluationNetwork
from evalstack.constructs.role import EvaluationRole
from evalstack.pipeline.definition import (
    DEFAULT_INSTANCE_TYPE,
    INSTANCE_COUNT,
    INSTANCE_TYPE,
    PROCESSING_IMAGE_URI,
    NetworkConfig,
    QualityGate,
    build_definition,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# Kept out of the image build context (and out of the asset hash) besides what .dockerignore lists.
IMAGE_EXCLUDE = [".git", ".venv", "node_modules", "cdk.out", "tests", "docs", "bench", "examples", "**/__pycache__"]


def repository_image(scope: Construct, construct_id: str, directory: Path | None = None) -> ecr_assets.DockerImageAsset:
    """The processing image built from the repository's Dockerfile (built and pushed by ``cdk deploy``)."""
    root = directory or REPOSITORY_ROOT
    if not (root / "Dockerfile").is_file():
        raise ValueError(f"image_directory: no Dockerfile in {root}; pass image_uri (a pushed evalstack image) instead")
    return ecr_assets.DockerImageAsset(
        scope, construct_id, directory=str(root), exclude=IMAGE_EXCLUDE, platform=ecr_assets.Platform.LINUX_AMD64
    )


_ECR_IMAGE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repo>[^:@]+)")


def ecr_repositories(scope: Construct, image_uri: str | None) -> list[ecr.IRepository]:
    """The ECR repository an image URI points into (empty for other registries), so the role can pull it."""
    match = _ECR_IMAGE.match(image_uri or "")
    if match is None:
        return []
    arn = f"arn:{Stack.of(scope).partition}:ecr:{match['region']}:{match['account']}:repository/{match['repo']}"
    return [
        ecr.Repository.from_repository_attributes(
            scope, "ImageRepository", repository_arn=arn, repository_name=match["repo"]
        )
    ]


class EvaluationPipeline(Construct):
    """Props:
      eval_type: benchmark | custom_scorer | llm_as_judge (required).
      role: EvaluationRole (required); the pipeline resource depends on its policy.
      key: KMS key for processing volumes and outputs (required).
      image_uri: the processing image URI, or
      image: a DockerImageAsset (see :func:`repository_image`); exactly one of the two.
      network: EvaluationNetwork; jobs run in its subnets. Default: no VPC.
      pipeline_name: default ``evalstack-<eval type>``.
      instance_type: default ``ml.m5.xlarge``; instance_count: default 1 (shards of a benchmark).
      quality_gate: a definition QualityGate (fail the execution below a threshold). Default none.
      max_parallel_steps: ParallelismConfiguration. Default 4.

    Attributes: ``pipeline`` (CfnPipeline), ``pipeline_name``, ``pipeline_arn``, ``image_uri``,
    ``definition`` (the builder's dict, tokens unresolved).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        eval_type: str,
        role: EvaluationRole,
        key: kms.IKey,
        image_uri: str | None = None,
        image: ecr_assets.DockerImageAsset | None = None,
        network: EvaluationNetwork | None = None,
        pipeline_name: str | None = None,
        instance_type: str = DEFAULT_INSTANCE_TYPE,
        instance_count: int = 1,
        quality_gate: QualityGate | None = None,
        max_parallel_steps: int = 4,
    ) -> None:
        super().__init__(scope, construct_id)
        if (image_uri is None) == (image is None):
            raise ValueError("EvaluationPipeline: give exactly one of image_uri or image")
        self.image_uri = image_uri if image is None else image.image_uri
        self.pipeline_name = pipeline_name or f"evalstack-{eval_type.replace('_', '-')}"
        network_config = (
            NetworkConfig(subnets=network.subnet_ids, security_group_ids=network.security_group_ids)
            if network is not None
            else None
        )
        self.definition = build_definition(
            eval_type,
            role_arn=role.role.role_arn,
            quality_gate=quality_gate,
            kms_key_id=key.key_arn,
            network=network_config,
        )
        _set_defaults(
            self.definition,
            {PROCESSING_IMAGE_URI: self.image_uri, INSTANCE_TYPE: instance_type, INSTANCE_COUNT: instance_count},
        )
        stack = Stack.of(self)
        self.pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=self.pipeline_name,
            pipeline_description=f"evalstack {eval_type} evaluation",
            role_arn=role.role.role_arn,
            # to_json_string turns the CDK tokens inside (role, key, image, subnets) into Fn::Join parts.
            pipeline_definition={"PipelineDefinitionBody": stack.to_json_string(self.definition)},
            # The property is typed as raw JSON in aws-cdk-lib, so it takes CloudFormation's casing.
            parallelism_configuration={"MaxParallelExecutionSteps": max_parallel_steps},
        )
        # The first execution must not race the role's policy.
        self.pipeline.node.add_dependency(role.policy)
        self.pipeline_arn = stack.format_arn(
            service="sagemaker", resource="pipeline", resource_name=self.pipeline_name.lower()
        )
        self.execution_arn_pattern = f"{self.pipeline_arn}/execution/*"

    def grant_start_execution(self, grantee: iam.IGrantable) -> iam.Grant:
        """Start executions and list this pipeline's executions (what the runtime and triggers need)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:DescribePipeline", "sagemaker:ListPipelineExecutions",
                     "sagemaker:StartPipelineExecution"],
            resource_arns=[self.pipeline_arn],
        )  # fmt: skip

    def grant_list_executions(self, grantee: iam.IGrantable) -> iam.Grant:
        """List this pipeline's executions only (what counting running evaluations needs)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:ListPipelineExecutions"], resource_arns=[self.pipeline_arn]
        )

    def grant_read_executions(self, grantee: iam.IGrantable) -> iam.Grant:
        """Describe executions, their steps and parameters."""
        self._acknowledge_executions(grantee)
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:DescribePipelineExecution", "sagemaker:ListPipelineExecutionSteps",
                     "sagemaker:ListPipelineParametersForExecution"],
            resource_arns=[self.execution_arn_pattern],
        )  # fmt: skip

    def grant_stop_execution(self, grantee: iam.IGrantable) -> iam.Grant:
        """Stop executions, and retry failed or stopped ones (what the runtime's stop() and retry() call)."""
        self._acknowledge_executions(grantee)
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:RetryPipelineExecution", "sagemaker:StopPipelineExecution"],
            resource_arns=[self.execution_arn_pattern],
        )

    def _acknowledge_executions(self, grantee: iam.IGrantable) -> None:
        if isinstance(grantee, Construct):
            acknowledge_wildcard_resource(
                grantee,
                self.execution_arn_pattern,
                f"Executions of the {self.pipeline_name} pipeline only: execution ids are generated at start.",
            )


def _set_defaults(definition: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Give the image/instance parameters this deployment's defaults, so starters pass only spec and output."""
    for parameter in definition["Parameters"]:
        if parameter["Name"] in defaults:
            parameter["DefaultValue"] = defaults[parameter["Name"]]
