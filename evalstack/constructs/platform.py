"""EvaluationPlatform: key, bucket, network, role, one pipeline per evaluation kind, optional
continuous evaluation and approval gate, and SSM parameters for the runtime client to find them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from evalstack.catalog.discovery import parameter_name  # the names the runtime client reads
from evalstack.constructs.approval import ApprovalThresholds, ModelApprovalGate
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.continuous import DEFAULT_SCHEDULE, ContinuousEvaluation
from evalstack.constructs.key import EvaluationKey
from evalstack.constructs.network import EvaluationNetwork
from evalstack.constructs.pipeline import EvaluationPipeline, ecr_repositories, repository_image
from evalstack.constructs.role import EvaluationRole
from evalstack.pipeline.definition import QualityGate
from evalstack.spec import EVAL_TYPES


@dataclass(frozen=True)
class ContinuousEvaluationSettings:
    """What ``EvaluationPlatform(continuous=...)`` evaluates: ``evaluation`` is the spec template whose
    ``eval_type`` picks the pipeline; ``thresholds`` adds the approval gate."""

    model_package_group: str
    evaluation: dict[str, Any]
    schedule: str | None = DEFAULT_SCHEDULE
    evaluate_new_packages: bool = True
    thresholds: ApprovalThresholds | None = None
    candidate_statuses: tuple[str, ...] = ("Approved", "PendingManualApproval")


class EvaluationPlatform(Construct):
    """Props:
      stage: names the pipelines (``evalstack-<stage>-<kind>``) and SSM parameters. Default ``dev``.
      eval_types: which pipelines to create. Default all three.
      existing_key, existing_bucket, existing_vpc: bring your own (see the single constructs).
      use_vpc: run jobs in a VPC (new isolated VPC unless existing_vpc). Default True.
      subnet_selection: for existing_vpc. create_endpoints: default True.
      image_uri: a pushed processing image. Default: built from the repository Dockerfile.
      endpoint_names, bedrock_models, secret_arns: what the jobs may invoke/read. Default none.
      instance_type, instance_count: pipeline parameter defaults. quality_gate: definition gate.
      continuous: ContinuousEvaluationSettings. Default none.

    Attributes: ``key``, ``bucket``, ``network`` (or None), ``role``, ``pipelines`` (eval type ->
    EvaluationPipeline), ``continuous``, ``approval_gate``, ``parameters`` (name -> StringParameter).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str = "dev",
        eval_types: Sequence[str] = EVAL_TYPES,
        existing_key: kms.IKey | None = None,
        existing_bucket: s3.IBucket | None = None,
        existing_vpc: ec2.IVpc | None = None,
        use_vpc: bool = True,
        subnet_selection: ec2.SubnetSelection | None = None,
        create_endpoints: bool = True,
        image_uri: str | None = None,
        endpoint_names: Sequence[str] = (),
        bedrock_models: Sequence[str] = (),
        secret_arns: Sequence[str] = (),
        instance_type: str = "ml.m5.xlarge",
        instance_count: int = 1,
        quality_gate: QualityGate | None = None,
        continuous: ContinuousEvaluationSettings | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        unknown = sorted(set(eval_types) - set(EVAL_TYPES))
        if unknown:
            raise ValueError(f"eval_types: unknown {unknown}; choose from {list(EVAL_TYPES)}")
        self.stage = stage
        self.key = EvaluationKey(self, "Key", existing_key=existing_key).key
        self.bucket = EvaluationBucket(self, "Bucket", key=self.key, existing_bucket=existing_bucket)
        self.network = (
            EvaluationNetwork(
                self,
                "Network",
                key=self.key,
                existing_vpc=existing_vpc,
                subnet_selection=subnet_selection,
                create_endpoints=create_endpoints,
            )
            if use_vpc
            else None
        )
        image = None if image_uri else repository_image(self, "ProcessingImage")
        groups = (continuous.model_package_group,) if continuous else ()
        prefix = f"evalstack-{stage}"
        self.role = EvaluationRole(
            self,
            "Role",
            bucket=self.bucket,
            image_repositories=[image.repository] if image else ecr_repositories(self, image_uri),
            endpoint_names=endpoint_names,
            bedrock_models=bedrock_models,
            secret_arns=secret_arns,
            model_package_groups=groups,
            network=self.network,
            pipeline_name_prefix=prefix,
        )
        self.pipelines = {
            kind: EvaluationPipeline(
                self,
                f"Pipeline-{kind}",
                eval_type=kind,
                role=self.role,
                key=self.key,
                image_uri=image_uri,
                image=image,
                network=self.network,
                pipeline_name=f"{prefix}-{kind.replace('_', '-')}",
                instance_type=instance_type,
                instance_count=instance_count,
                quality_gate=quality_gate,
            )
            for kind in eval_types
        }
        self.continuous: ContinuousEvaluation | None = None
        self.approval_gate: ModelApprovalGate | None = None
        if continuous is not None:
            self._add_continuous(continuous)
        self.parameters = self._write_parameters()

    def _add_continuous(self, settings: ContinuousEvaluationSettings) -> None:
        kind = settings.evaluation.get("eval_type")
        if kind not in self.pipelines:
            raise ValueError(f"continuous.evaluation.eval_type: {kind!r} has no pipeline here ({list(self.pipelines)})")
        self.continuous = ContinuousEvaluation(
            self,
            "ContinuousEvaluation",
            pipeline=self.pipelines[kind],
            bucket=self.bucket,
            key=self.key,
            model_package_group=settings.model_package_group,
            evaluation=settings.evaluation,
            schedule=settings.schedule,
            evaluate_new_packages=settings.evaluate_new_packages,
            candidate_statuses=settings.candidate_statuses,
            concurrency_pipelines=list(self.pipelines.values()),
        )
        if settings.thresholds is not None:
            self.approval_gate = ModelApprovalGate(
                self,
                "ApprovalGate",
                pipelines=[self.pipelines[kind]],
                bucket=self.bucket,
                key=self.key,
                model_package_groups=[settings.model_package_group],
                thresholds=settings.thresholds,
            )

    def _write_parameters(self) -> dict[str, ssm.StringParameter]:
        values = {
            parameter_name(self.stage, "pipelines", kind): pipeline.pipeline_name
            for kind, pipeline in self.pipelines.items()
        }
        values[parameter_name(self.stage, "output-uri")] = self.bucket.output_uri
        values[parameter_name(self.stage, "kms-key-arn")] = self.key.key_arn
        values[parameter_name(self.stage, "role-arn")] = self.role.role.role_arn
        out = {}
        for name, value in values.items():
            construct_id = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name.split("/", 3)[-1]))
            out[name] = ssm.StringParameter(
                self, f"Parameter{construct_id}", parameter_name=name, string_value=value,
                description="evalstack: discovery for the runtime client",
            )  # fmt: skip
            CfnOutput(self, construct_id, value=value, description=name)
        return out

    def grant_start_executions(self, grantee: iam.IGrantable) -> None:
        """Start, follow, stop and retry every pipeline's executions; pass the role; read parameters and results."""
        for pipeline in self.pipelines.values():
            pipeline.grant_start_execution(grantee)
            pipeline.grant_read_executions(grantee)
            pipeline.grant_stop_execution(grantee)
        self.role.grant_pass_role(grantee)
        self.bucket.grant_read_write_output(grantee)
        for parameter in self.parameters.values():
            parameter.grant_read(grantee)


class EvaluationPlatformStack(Stack):
    """A stack holding one EvaluationPlatform (``self.platform``).

    ``platform``: EvaluationPlatform keyword props. ``vpc_attributes``: ec2.Vpc.from_vpc_attributes
    keywords of an existing VPC (imported without a lookup, so synth stays offline). Other keywords
    go to Stack.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: dict[str, Any] | None = None,
        vpc_attributes: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        props = dict(platform or {})
        if vpc_attributes:
            props["existing_vpc"] = ec2.Vpc.from_vpc_attributes(self, "ExistingVpc", **vpc_attributes)
        self.platform = EvaluationPlatform(self, "Platform", **props)
