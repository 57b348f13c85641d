"""EvaluationPlatform: key, bucket, network, roles, one pipeline per evaluation kind, alarms, optional
continuous evaluation and approval gate, and SSM parameters for the runtime client to find them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from evalstack.catalog.discovery import parameter_name  # the names the runtime client reads
from evalstack.constructs import defaults
from evalstack.constructs.approval import ApprovalThresholds, ModelApprovalGate
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.continuous import ContinuousEvaluation
from evalstack.constructs.key import EvaluationKey, prepare_key
from evalstack.constructs.network import EvaluationNetwork
from evalstack.constructs.operations import EvaluationAlarms
from evalstack.constructs.pipeline import IMAGE_EXTRAS, EvaluationPipeline, ecr_repositories, processing_image
from evalstack.constructs.role import EvaluationRole, PipelineRole
from evalstack.pipeline.definition import QualityGate
from evalstack.spec import EVAL_TYPES


@dataclass(frozen=True)
class ContinuousEvaluationSettings:
    """What ``EvaluationPlatform(continuous=...)`` evaluates: ``evaluation`` is the spec template whose
    ``eval_type`` picks the pipeline; ``thresholds`` adds the approval gate. Every field is forwarded to
    ContinuousEvaluation or ModelApprovalGate (see their props for the meaning and the defaults)."""

    model_package_group: str
    evaluation: dict[str, Any]
    schedule: str | None = defaults.SCHEDULE
    schedule_timezone: str = defaults.SCHEDULE_TIMEZONE
    evaluate_new_packages: bool = True
    thresholds: ApprovalThresholds | None = None
    candidate_statuses: tuple[str, ...] = defaults.CANDIDATE_STATUSES
    gated_statuses: tuple[str, ...] = defaults.GATED_STATUSES
    max_concurrent_evaluations: int = defaults.MAX_CONCURRENT
    retry_delay: Duration = defaults.RETRY_DELAY
    retry_max_receives: int = defaults.RETRY_MAX_RECEIVES
    trigger_reserved_concurrency: int = defaults.TRIGGER_RESERVED_CONCURRENCY
    gate_reserved_concurrency: int = defaults.GATE_RESERVED_CONCURRENCY
    existing_topic: sns.ITopic | None = None


class EvaluationPlatform(Construct):
    """Key, bucket, network, the job and pipeline roles, one pipeline per kind, alarms, optional continuous
    evaluation and approval gate, and SSM parameters for the runtime client. Every prop of the parts is
    forwarded; every default is in :mod:`evalstack.constructs.defaults`.

    Props:
      stage: names the SSM parameters ``/evalstack/<stage>/...``. Default ``defaults.STAGE``.
      name_prefix: names the pipelines ``<prefix>-<kind>`` and log groups ``/evalstack/<prefix>/...``.
        Default ``evalstack-<stage>``.
      eval_types: which pipelines to create. Default all three.
      existing_key: bring your own key. Default: the existing bucket's key, else a new EvaluationKey.
        A ``kms.Key`` gets the platform's key policy statements; an imported key a synth-time warning.
      key_alias: alias of a new key. Default none.
      key_pending_window: deletion waiting period of a new key. Default ``defaults.KEY_PENDING_WINDOW``.
      existing_bucket, existing_logging_bucket, bucket_name, dataset_prefix, output_prefix, control_prefix,
      noncurrent_version_expiration, access_log_expiration: see EvaluationBucket.
      dataset_prefixes: what the job role may read. Default ``(dataset_prefix,)``.
      removal_policy: key, buckets and log groups. Default ``defaults.REMOVAL_POLICY`` (RETAIN).
      existing_vpc: bring your own VPC. use_vpc: run jobs in a VPC. Default True.
      subnet_selection, vpc_cidr, max_azs, endpoints, skip_endpoints, egress_prefix_lists: see EvaluationNetwork.
      create_endpoints: False skips every endpoint (the VPC has them). Default True.
      image_uri: a pushed processing image. Default: built from the installed package's Dockerfile.
      image_extras: extras the built image installs. Default ``("engine", "sagemaker-mlflow")``.
      endpoint_names, bedrock_models, secret_arns, model_package_groups: what the jobs may invoke, read or
        describe. Default none (the continuous group is added).
      mlflow_tracking_server_arn: the MLflow tracking server jobs may log to; with endpoints, adds its
        interface endpoint (``SageMakerMlflow``). Default none (mlflow refused).
      model_artifact_uris, model_artifact_key, jumpstart_models: model artifacts the jobs download and serve
        (see EvaluationRole). Default none.
      existing_role: the job role. existing_pipeline_role: the pipeline role. Default: create them.
      instance_type, report_instance_type, instance_count, volume_size_gb, max_runtime_seconds,
      max_parallel_steps, quality_gate: see EvaluationPipeline.
      allowed_instance_types: further types starters may pick with the InstanceType parameter. Default none.
      continuous: ContinuousEvaluationSettings. Default none.
      existing_alarm_topic: where alarms and failure notices go. Default: a new encrypted topic.
      log_retention: of every log group. Default ``defaults.LOG_RETENTION``.
      create_outputs: CfnOutputs besides the SSM parameters. Default ``defaults.CREATE_OUTPUTS``.

    Attributes: ``key``, ``bucket``, ``network`` (or None), ``role`` (job), ``pipeline_role``,
    ``pipelines`` (eval type -> EvaluationPipeline), ``alarms``, ``continuous``, ``approval_gate``,
    ``parameters`` (name -> StringParameter), ``name_prefix``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str = defaults.STAGE,
        name_prefix: str | None = None,
        eval_types: Sequence[str] = EVAL_TYPES,
        existing_key: kms.IKey | None = None,
        key_alias: str | None = None,
        key_pending_window: Duration = defaults.KEY_PENDING_WINDOW,
        existing_bucket: s3.IBucket | None = None,
        existing_logging_bucket: s3.IBucket | None = None,
        bucket_name: str | None = None,
        dataset_prefix: str = defaults.DATASET_PREFIX,
        dataset_prefixes: Sequence[str] | None = None,
        output_prefix: str = defaults.OUTPUT_PREFIX,
        control_prefix: str = defaults.CONTROL_PREFIX,
        noncurrent_version_expiration: Duration = defaults.NONCURRENT_VERSION_EXPIRATION,
        access_log_expiration: Duration = defaults.ACCESS_LOG_EXPIRATION,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
        existing_vpc: ec2.IVpc | None = None,
        use_vpc: bool = True,
        subnet_selection: ec2.SubnetSelection | None = None,
        vpc_cidr: str = defaults.VPC_CIDR,
        max_azs: int = defaults.MAX_AZS,
        endpoints: Sequence[str] | None = None,
        skip_endpoints: Sequence[str] = (),
        egress_prefix_lists: Sequence[str] = (),
        create_endpoints: bool = True,
        image_uri: str | None = None,
        image_extras: Sequence[str] = IMAGE_EXTRAS,
        endpoint_names: Sequence[str] = (),
        bedrock_models: Sequence[str] = (),
        secret_arns: Sequence[str] = (),
        model_package_groups: Sequence[str] = (),
        mlflow_tracking_server_arn: str | None = None,
        model_artifact_uris: Sequence[str] = (),
        model_artifact_key: kms.IKey | None = None,
        jumpstart_models: Sequence[str] = (),
        existing_role: iam.IRole | None = None,
        existing_pipeline_role: iam.IRole | None = None,
        instance_type: str = defaults.INSTANCE_TYPE,
        report_instance_type: str = defaults.REPORT_INSTANCE_TYPE,
        allowed_instance_types: Sequence[str] = (),
        instance_count: int = defaults.INSTANCE_COUNT,
        volume_size_gb: int = defaults.VOLUME_SIZE_GB,
        max_runtime_seconds: int = defaults.MAX_RUNTIME_SECONDS,
        max_parallel_steps: int = defaults.MAX_PARALLEL_STEPS,
        quality_gate: QualityGate | None = None,
        continuous: ContinuousEvaluationSettings | None = None,
        existing_alarm_topic: sns.ITopic | None = None,
        log_retention: logs.RetentionDays = defaults.LOG_RETENTION,
        create_outputs: bool = defaults.CREATE_OUTPUTS,
    ) -> None:
        super().__init__(scope, construct_id)
        unknown = sorted(set(eval_types) - set(EVAL_TYPES))
        if unknown:
            raise ValueError(f"eval_types: unknown {unknown}; choose from {list(EVAL_TYPES)}")
        self.stage = stage
        self.name_prefix = name_prefix or defaults.NAME_PREFIX_TEMPLATE.format(stage=stage)
        key = existing_key or (existing_bucket.encryption_key if existing_bucket is not None else None)
        self.key: kms.IKey = key or EvaluationKey(
            self, "Key", alias=key_alias, pending_window=key_pending_window, removal_policy=removal_policy
        ).key
        prepare_key(self, self.key, self.name_prefix)
        self.bucket = EvaluationBucket(
            self,
            "Bucket",
            key=self.key,
            existing_bucket=existing_bucket,
            existing_logging_bucket=existing_logging_bucket,
            bucket_name=bucket_name,
            dataset_prefix=dataset_prefix,
            output_prefix=output_prefix,
            control_prefix=control_prefix,
            noncurrent_version_expiration=noncurrent_version_expiration,
            log_expiration=access_log_expiration,
            removal_policy=removal_policy,
        )
        self.network = (
            EvaluationNetwork(
                self,
                "Network",
                key=self.key,
                existing_vpc=existing_vpc,
                subnet_selection=subnet_selection,
                cidr=vpc_cidr,
                max_azs=max_azs,
                endpoints=endpoints if create_endpoints else (),
                skip_endpoints=skip_endpoints,
                mlflow_tracking_server_arn=mlflow_tracking_server_arn,
                egress_prefix_lists=egress_prefix_lists,
                name_prefix=self.name_prefix,
                flow_log_retention=log_retention,
                removal_policy=removal_policy,
            )
            if use_vpc
            else None
        )
        image = None if image_uri else processing_image(self, "ProcessingImage", image_extras)
        pipeline_names = {kind: f"{self.name_prefix}-{kind.replace('_', '-')}" for kind in eval_types}
        continuous_kind = self._continuous_kind(continuous, eval_types)
        groups = [*model_package_groups, *([continuous.model_package_group] if continuous else [])]
        self.role = EvaluationRole(
            self,
            "Role",
            bucket=self.bucket,
            dataset_prefixes=dataset_prefixes,
            spec_pipelines=[pipeline_names[continuous_kind]] if continuous_kind else [],
            image_repositories=[image.repository] if image else ecr_repositories(self, image_uri),
            endpoint_names=endpoint_names,
            bedrock_models=bedrock_models,
            secret_arns=secret_arns,
            model_package_groups=list(dict.fromkeys(groups)),
            network=self.network,
            mlflow_tracking_server_arn=mlflow_tracking_server_arn,
            model_artifact_uris=model_artifact_uris,
            model_artifact_key=model_artifact_key,
            jumpstart_models=jumpstart_models,
            existing_role=existing_role,
        )
        self.pipeline_role = PipelineRole(
            self,
            "PipelineRole",
            job_role=self.role,
            key=self.key,
            bucket=self.bucket,
            instance_types=[instance_type, report_instance_type, *allowed_instance_types],
            max_runtime_seconds=max_runtime_seconds,
            network=self.network,
            pipeline_name_prefix=self.name_prefix,
            existing_role=existing_pipeline_role,
        )
        self.pipelines = {
            kind: EvaluationPipeline(
                self,
                f"Pipeline-{kind}",
                eval_type=kind,
                role=self.role,
                pipeline_role=self.pipeline_role,
                key=self.key,
                image_uri=image_uri,
                image=image,
                network=self.network,
                pipeline_name=pipeline_names[kind],
                instance_type=instance_type,
                report_instance_type=report_instance_type,
                instance_count=instance_count,
                volume_size_gb=volume_size_gb,
                max_runtime_seconds=max_runtime_seconds,
                quality_gate=quality_gate,
                max_parallel_steps=max_parallel_steps,
            )
            for kind in eval_types
        }
        self.alarms = EvaluationAlarms(self, "Alarms", key=self.key, existing_topic=existing_alarm_topic)
        for kind, pipeline in self.pipelines.items():
            self.alarms.watch_pipeline(f"Pipeline-{kind}", pipeline.pipeline_name)
        self.continuous: ContinuousEvaluation | None = None
        self.approval_gate: ModelApprovalGate | None = None
        if continuous is not None and continuous_kind is not None:
            self.continuous = ContinuousEvaluation(
                self,
                "ContinuousEvaluation",
                pipeline=self.pipelines[continuous_kind],
                bucket=self.bucket,
                key=self.key,
                alarms=self.alarms,
                model_package_group=continuous.model_package_group,
                evaluation=continuous.evaluation,
                schedule=continuous.schedule,
                schedule_timezone=continuous.schedule_timezone,
                evaluate_new_packages=continuous.evaluate_new_packages,
                candidate_statuses=continuous.candidate_statuses,
                concurrency_pipelines=list(self.pipelines.values()),
                max_concurrent_evaluations=continuous.max_concurrent_evaluations,
                retry_delay=continuous.retry_delay,
                retry_max_receives=continuous.retry_max_receives,
                reserved_concurrency=continuous.trigger_reserved_concurrency,
                mlflow_tracking_server_arn=mlflow_tracking_server_arn,
                name_prefix=self.name_prefix,
                log_retention=log_retention,
                removal_policy=removal_policy,
            )
            if continuous.thresholds is not None:
                self.approval_gate = ModelApprovalGate(
                    self,
                    "ApprovalGate",
                    continuous=self.continuous,
                    key=self.key,
                    thresholds=continuous.thresholds,
                    alarms=self.alarms,
                    existing_topic=continuous.existing_topic,
                    gated_statuses=continuous.gated_statuses,
                    reserved_concurrency=continuous.gate_reserved_concurrency,
                    name_prefix=self.name_prefix,
                    log_retention=log_retention,
                    removal_policy=removal_policy,
                )
        self.parameters = self._write_parameters(create_outputs)

    @staticmethod
    def _continuous_kind(settings: ContinuousEvaluationSettings | None, eval_types: Sequence[str]) -> str | None:
        if settings is None:
            return None
        kind = settings.evaluation.get("eval_type")
        if kind not in eval_types:
            raise ValueError(f"continuous.evaluation.eval_type: {kind!r} has no pipeline here ({list(eval_types)})")
        return kind

    def _write_parameters(self, create_outputs: bool) -> dict[str, ssm.StringParameter]:
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
            if create_outputs:
                # The parameter's own value: an output may not re-export another stack's export.
                CfnOutput(self, construct_id, value=out[name].string_value, description=name)
        return out

    def grant_start_executions(self, grantee: iam.IGrantable) -> None:
        """Start, follow, stop and retry every pipeline's executions; read parameters; read and write
        results under the output prefix. No iam:PassRole: the pipelines carry their own roles."""
        for pipeline in self.pipelines.values():
            pipeline.grant_start_execution(grantee)
            pipeline.grant_read_executions(grantee)
            pipeline.grant_stop_execution(grantee)
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
