"""EvaluationPipeline: one AWS::SageMaker::Pipeline whose body is evalstack's definition builder output."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.constructs.network import EvaluationNetwork
from evalstack.constructs.role import EvaluationRole, PipelineRole
from evalstack.pipeline.definition import (
    INSTANCE_COUNT,
    INSTANCE_TYPE,
    PROCESSING_IMAGE_URI,
    REPORT_INSTANCE_TYPE,
    NetworkConfig,
    QualityGate,
    build_definition,
)

# The image's build context is the evalstack package itself, wherever it is installed: the Dockerfile
# ships inside it (evalstack/image/Dockerfile), so a wheel builds the same image as a checkout.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
DOCKERFILE = "image/Dockerfile"
# What the image installs: the engine, and the SageMaker MLflow plugin for tracking-server ARNs.
IMAGE_EXTRAS = ("engine", "sagemaker-mlflow")
_EXTRA_MARKER = re.compile(r'extra\s*==\s*"(?P<extra>[^"]+)"')


def image_requirements(extras: Sequence[str] = IMAGE_EXTRAS, distribution: str = "evalstack") -> list[str]:
    """The requirements of ``extras`` as the installed distribution's metadata (pyproject.toml) lists them."""
    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise ValueError(
            f"processing image: the {distribution} distribution is not installed (pip install evalstack), "
            "so its engine requirements are unknown; pass image_uri (a pushed evalstack image) instead"
        ) from err
    wanted = set(extras)
    out = []
    for line in requires:
        requirement, _, marker = line.partition(";")
        match = _EXTRA_MARKER.search(marker)
        if match is not None and match["extra"] in wanted:
            out.append(requirement.strip())
    missing = wanted - {m["extra"] for line in requires if (m := _EXTRA_MARKER.search(line))}
    if missing:
        raise ValueError(f"processing image: extras {sorted(missing)} are not defined by {distribution}")
    return sorted(set(out))


def processing_image(
    scope: Construct, construct_id: str, extras: Sequence[str] = IMAGE_EXTRAS
) -> ecr_assets.DockerImageAsset:
    """The processing image built from the installed package's Dockerfile (built and pushed by ``cdk deploy``)."""
    if not (PACKAGE_DIR / DOCKERFILE).is_file():
        raise ValueError(f"processing image: no {DOCKERFILE} in {PACKAGE_DIR}; pass image_uri instead")
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(PACKAGE_DIR),
        file=DOCKERFILE,
        build_args={"REQUIREMENTS": " ".join(image_requirements(extras))},
        exclude=["**/__pycache__", "**/*.pyc"],
        platform=ecr_assets.Platform.LINUX_AMD64,
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
      role: the job EvaluationRole the processing jobs run as (required).
      pipeline_role: the PipelineRole the pipeline runs as (required); its instance types must include
        ``instance_type`` and ``report_instance_type``. The pipeline depends on both roles' policies.
      key: KMS key for processing volumes and outputs (required).
      image_uri: the processing image URI, or
      image: a DockerImageAsset (see :func:`processing_image`); exactly one of the two.
      network: EvaluationNetwork; jobs run in its subnets. Default: no VPC.
      pipeline_name: default ``evalstack-<eval type>``.
      instance_type: evaluation steps, default ``defaults.INSTANCE_TYPE``; report_instance_type: the
        Report steps, default ``defaults.REPORT_INSTANCE_TYPE`` (small CPU);
        instance_count: default 1 (shards of a benchmark).
      volume_size_gb: default ``defaults.VOLUME_SIZE_GB``.
      max_runtime_seconds: default ``defaults.MAX_RUNTIME_SECONDS``.
      quality_gate: a definition QualityGate (fail the execution below a threshold). Default none.
      max_parallel_steps: ParallelismConfiguration. Default ``defaults.MAX_PARALLEL_STEPS``.

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
        pipeline_role: PipelineRole,
        key: kms.IKey,
        image_uri: str | None = None,
        image: ecr_assets.DockerImageAsset | None = None,
        network: EvaluationNetwork | None = None,
        pipeline_name: str | None = None,
        instance_type: str = defaults.INSTANCE_TYPE,
        report_instance_type: str = defaults.REPORT_INSTANCE_TYPE,
        instance_count: int = defaults.INSTANCE_COUNT,
        volume_size_gb: int = defaults.VOLUME_SIZE_GB,
        max_runtime_seconds: int = defaults.MAX_RUNTIME_SECONDS,
        quality_gate: QualityGate | None = None,
        max_parallel_steps: int = defaults.MAX_PARALLEL_STEPS,
    ) -> None:
        super().__init__(scope, construct_id)
        if (image_uri is None) == (image is None):
            raise ValueError("EvaluationPipeline: give exactly one of image_uri or image")
        fenced = {instance_type, report_instance_type} - set(pipeline_role.instance_types)
        if fenced:
            raise ValueError(
                f"EvaluationPipeline.instance_type: {sorted(fenced)} not in the pipeline role's instance_types "
                f"{list(pipeline_role.instance_types)}"
            )
        if max_runtime_seconds > pipeline_role.max_runtime_seconds:
            raise ValueError(
                f"EvaluationPipeline.max_runtime_seconds: {max_runtime_seconds} exceeds the pipeline role's "
                f"limit {pipeline_role.max_runtime_seconds}"
            )
        self.image_uri = image_uri if image is None else image.image_uri
        self.max_runtime_seconds = max_runtime_seconds
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
            volume_size_gb=volume_size_gb,
            max_runtime_seconds=max_runtime_seconds,
        )
        _set_defaults(
            self.definition,
            {
                PROCESSING_IMAGE_URI: self.image_uri,
                INSTANCE_TYPE: instance_type,
                REPORT_INSTANCE_TYPE: report_instance_type,
                INSTANCE_COUNT: instance_count,
            },
        )
        stack = Stack.of(self)
        self.pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=self.pipeline_name,
            pipeline_description=f"evalstack {eval_type} evaluation",
            role_arn=pipeline_role.role.role_arn,
            # to_json_string turns the CDK tokens inside (role, key, image, subnets) into Fn::Join parts.
            pipeline_definition={"PipelineDefinitionBody": stack.to_json_string(self.definition)},
            # The property is typed as raw JSON in aws-cdk-lib, so it takes CloudFormation's casing.
            parallelism_configuration={"MaxParallelExecutionSteps": max_parallel_steps},
        )
        # The first execution must not race the roles' policies.
        self.pipeline.node.add_dependency(role.policy, pipeline_role.policy)
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
