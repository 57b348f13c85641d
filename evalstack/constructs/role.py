"""The two SageMaker roles: EvaluationRole (the jobs: data rights) and PipelineRole (the pipelines: control plane)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.constructs.network import EvaluationNetwork

# SageMaker Pipelines names the processing jobs it creates "pipelines-<execution id>-<step>-<suffix>".
PIPELINE_JOB_PATTERN = "pipelines-*"
_JUMPSTART_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Cross-region inference profile ids carry a geography prefix (e.g. "us.anthropic.claude-...").
_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.", "jp.", "au.", "ca.")
ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
# These EC2 and ECR actions support no resource-level permissions; AWS requires "Resource": "*".
UNSCOPABLE_ACTIONS = (
    "ecr:GetAuthorizationToken", "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
)  # fmt: skip


# What the job code needs to log evaluations to a SageMaker managed MLflow tracking server.
MLFLOW_ACTIONS = (
    "sagemaker-mlflow:CreateExperiment", "sagemaker-mlflow:CreateRun", "sagemaker-mlflow:GetExperiment",
    "sagemaker-mlflow:GetExperimentByName", "sagemaker-mlflow:GetRun", "sagemaker-mlflow:LogBatch",
    "sagemaker-mlflow:LogInputs", "sagemaker-mlflow:LogMetric", "sagemaker-mlflow:LogParam",
    "sagemaker-mlflow:SearchExperiments", "sagemaker-mlflow:SearchRuns", "sagemaker-mlflow:SetTag",
    "sagemaker-mlflow:UpdateRun",
)  # fmt: skip


class _ScopedRole(Construct):
    """A role assumed by SageMaker with one iam.Policy of named actions; wildcard resources need a reason."""

    def __init__(
        self, scope: Construct, construct_id: str, *, description: str, existing_role: iam.IRole | None
    ) -> None:
        super().__init__(scope, construct_id)
        self.role: iam.IRole = existing_role or iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"), description=description
        )
        self.policy = iam.Policy(self, "Policy", roles=[self.role])
        self._stack = Stack.of(self)

    def _arn(self, service: str, resource: str, name: str) -> str:
        return self._stack.format_arn(service=service, resource=resource, resource_name=name)

    def _add(
        self,
        sid: str,
        actions: list[str],
        resources: list[str],
        conditions: dict | None = None,
        *,
        wildcard_reason: str | None = None,
    ) -> None:
        self.policy.add_statements(
            iam.PolicyStatement(sid=sid, actions=actions, resources=resources, conditions=conditions)
        )
        for resource in resources:
            if "*" in resource:
                if wildcard_reason is None:
                    raise ValueError(f"{sid}: wildcard resource {resource!r} needs a reason")
                acknowledge_wildcard_resource(self.policy, resource, wildcard_reason)

    def _grant_volume_encryption(self, key: kms.IKey) -> None:
        # CreateProcessingJob with VolumeKmsKeyId makes SageMaker create a grant on the key for the
        # job's EBS volumes; only grants for AWS resources.
        self._add(
            "EncryptJobVolumes",
            ["kms:CreateGrant"],
            [key.key_arn],
            {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        )


class EvaluationRole(_ScopedRole):
    """The job role: what the processing jobs (user code: custom scorers, datasets) run as. Data rights
    only: no SageMaker control plane (no sagemaker:Create*), no iam:PassRole. No wildcard actions.

    Props:
      bucket: the EvaluationBucket (required): read ``dataset_prefixes`` and the output prefix, create objects
        only under the output prefix and never replace one (write-once), read the trigger's specs of
        ``spec_pipelines`` (never write control/).
      dataset_prefixes: default ``(bucket.dataset_prefix,)``.
      spec_pipelines: pipeline names whose ``control/<pipeline>/specs/`` the jobs read. Default none.
      image_repositories: ECR repositories the processing image comes from (the only images the jobs
        can run: SageMaker pulls with this role). Default none.
      endpoint_names: SageMaker endpoints the jobs may invoke. Default none.
      bedrock_models: Bedrock model ids, inference profile ids or ARNs the jobs may invoke. Default none.
      secret_arns: Secrets Manager secrets (API keys of OpenAI-compatible servers). Default none.
      model_package_groups: groups whose packages the jobs may describe. Default none.
      network: EvaluationNetwork; grants ENI management only inside its VPC. Default none.
      mlflow_tracking_server_arn: a SageMaker MLflow tracking server the jobs log to. Default none.
      model_artifact_uris: ``s3://`` URIs of model artifacts the jobs download and serve (a package's
        ``ModelDataUrl`` or ``ModelDataSource``): an object (``s3://b/m/model.tar.gz``) is read as named; a
        prefix ends in ``/`` (``s3://b/m/llm/``) and is read and listed below it. Default none.
      model_artifact_key: the KMS key of those artifacts: kms:Decrypt through S3 only. Default none.
      jumpstart_models: JumpStart model ids (``jumpstart:<id>`` references) the jobs serve: the regional
        JumpStart buckets' manifest, and the objects whose keys name one of these ids. Default none.
      existing_role: bring your own role; the same policy is attached to it. Default: create one.

    Inside a VPC, the S3 endpoint of ``network`` (when it made one) also lets the artifacts through.

    Writes under the output prefix are write-once (``EvaluationBucket.grant_write_once_output``).

    Attributes: ``role``, ``policy`` (the iam.Policy that pipelines must depend on),
    ``bucket_policy_denies`` (whether the bucket policy repeats the write-once rules as Denies for
    this role: only a bucket policy of this stack can name it).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: EvaluationBucket,
        dataset_prefixes: Sequence[str] | None = None,
        spec_pipelines: Sequence[str] = (),
        image_repositories: Sequence[ecr.IRepository] = (),
        endpoint_names: Sequence[str] = (),
        bedrock_models: Sequence[str] = (),
        secret_arns: Sequence[str] = (),
        model_package_groups: Sequence[str] = (),
        network: EvaluationNetwork | None = None,
        mlflow_tracking_server_arn: str | None = None,
        model_artifact_uris: Sequence[str] = (),
        model_artifact_key: kms.IKey | None = None,
        jumpstart_models: Sequence[str] = (),
        existing_role: iam.IRole | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="evalstack: evaluation processing jobs (data rights only)",
            existing_role=existing_role,
        )
        self.bucket = bucket
        bucket.grant_read_datasets(self.policy, tuple(dataset_prefixes or (bucket.dataset_prefix,)))
        bucket.grant_write_once_output(self.policy)
        self.bucket_policy_denies = bucket.deny_output_rewrites(self.role, self)
        if spec_pipelines:
            bucket.grant_read_specs(self.policy, tuple(spec_pipelines))
        self._grant_volume_encryption(bucket.key)
        # An output KmsKeyId needs kms:Encrypt (SageMaker's CreateProcessingJob execution-role permissions);
        # kms:GrantIsForAWSResource does not apply to these actions, so they stand in their own statement.
        self._add("EncryptJobOutputs", ["kms:DescribeKey", "kms:Encrypt"], [bucket.key.key_arn])
        self._add(
            "WriteProcessingJobLogs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
            [
                self._stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
                # CreateLogGroup and DescribeLogStreams name the group itself, the others its streams.
                for name in ("/aws/sagemaker/ProcessingJobs", "/aws/sagemaker/ProcessingJobs:*")
            ],
            wildcard_reason="Log streams of the /aws/sagemaker/ProcessingJobs group are named per job at run time; "
            "the grant is limited to that one log group.",
        )
        self._add(
            "PublishProcessingJobMetrics",
            ["cloudwatch:PutMetricData"],
            ["*"],
            {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/ProcessingJobs"}},
            wildcard_reason="cloudwatch:PutMetricData supports no resource-level permissions; the "
            "cloudwatch:namespace condition limits it to SageMaker's processing-job namespace.",
        )
        if image_repositories:
            self._add("PullProcessingImage", list(ECR_PULL_ACTIONS), [r.repository_arn for r in image_repositories])
            self._add(
                "AuthenticateToEcr",
                ["ecr:GetAuthorizationToken"],
                ["*"],
                wildcard_reason="ecr:GetAuthorizationToken and the ec2:Describe* calls SageMaker makes for VPC jobs "
                "support no resource-level permissions; image pulls themselves are scoped to the repository.",
            )
        if endpoint_names:
            self._add(
                "InvokeNamedEndpoints",
                ["sagemaker:InvokeEndpoint"],
                [self._arn("sagemaker", "endpoint", name.lower()) for name in endpoint_names],
            )
        if bedrock_models:
            self._add(
                "InvokeNamedBedrockModels",
                ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
                sorted({arn for model in bedrock_models for arn in self._bedrock_arns(model)}),
                wildcard_reason="A cross-region inference profile routes each call to its foundation model in any "
                "Region of the profile's geography, and Bedrock authorizes that model too; only the named model.",
            )
        if secret_arns:
            self._add("ReadModelApiKeys", ["secretsmanager:GetSecretValue"], list(secret_arns))
        if model_package_groups:
            self._add(
                "DescribeModelPackages",
                ["sagemaker:DescribeModelPackage"],
                [self._arn("sagemaker", "model-package", f"{g.lower()}/*") for g in model_package_groups],
                wildcard_reason="Versions of the named model package groups only: new versions are registered "
                "after deployment.",
            )
        if network is not None:
            self._grant_network(network)
        if mlflow_tracking_server_arn:
            self._add("TrackToMlflowServer", list(MLFLOW_ACTIONS), [mlflow_tracking_server_arn])
        reads = _artifact_reads(model_artifact_uris, self._stack.partition)
        reads.merge(_jumpstart_reads(jumpstart_models, self._stack.partition, self._stack.region))
        if reads.objects:
            self._grant_artifact_reads(reads, network)
        if model_artifact_key is not None:
            self._add(
                "DecryptModelArtifacts",
                ["kms:Decrypt"],
                [model_artifact_key.key_arn],
                {"StringEquals": {"kms:ViaService": f"s3.{self._stack.region}.amazonaws.com"}},
            )

    def _grant_artifact_reads(self, reads: _ArtifactReads, network: EvaluationNetwork | None) -> None:
        reason = (
            "Model artifacts named by the model_artifact_uris prefixes and jumpstart_models ids: a prefix holds "
            "the files of one uncompressed model; JumpStart keys of one model id differ by version and layout."
        )
        self._add("ReadModelArtifacts", ["s3:GetObject"], sorted(reads.objects), wildcard_reason=reason)
        if reads.listed_prefixes:
            # IAM has no per-bucket condition within one statement: each listed bucket accepts each prefix.
            # Listing reveals key names only; GetObject above stays exact.
            self._add(
                "ListModelArtifactPrefixes",
                ["s3:ListBucket"],
                sorted(reads.listed_buckets),
                {"StringLike": {"s3:prefix": sorted(reads.listed_prefixes)}},
            )
        if network is not None:
            network.allow_s3_reads(sorted(reads.objects), sorted(reads.listed_buckets))

    def _bedrock_arns(self, model: str) -> list[str]:
        if model.startswith("arn:"):
            if ":inference-profile/" not in model:
                return [model]
            # A system-defined profile ARN grants nothing by itself: the routed-to model must be allowed too.
            profile = model.rsplit("/", 1)[1]
            return [model, *self._bedrock_arns(profile)[1:]]
        if model.startswith(_PROFILE_PREFIXES):
            # A cross-region profile routes to the foundation model in any region of its geography.
            base = model.split(".", 1)[1]
            return [
                self._stack.format_arn(service="bedrock", resource="inference-profile", resource_name=model),
                self._stack.format_arn(
                    service="bedrock", region="*", account="", resource="foundation-model", resource_name=base
                ),
            ]
        return [self._stack.format_arn(service="bedrock", account="", resource="foundation-model", resource_name=model)]

    def _grant_network(self, network: EvaluationNetwork) -> None:
        vpc_arn = self._arn("ec2", "vpc", network.vpc.vpc_id)
        # ec2:Vpc is not a condition key of the network-interface resource that CreateNetworkInterface
        # creates, so that one resource is allowed without it; the subnet and security group the call
        # also names must still be in the evaluation VPC (the statement below).
        self._add(
            "CreateJobNetworkInterfaces",
            ["ec2:CreateNetworkInterface"],
            [self._arn("ec2", "network-interface", "*")],
            wildcard_reason="Network interfaces are created per job; CreateNetworkInterface also needs the subnet "
            "and security group, which the next statement limits to the evaluation VPC.",
        )
        self._add(
            "ManageJobNetworkInterfacesInVpc",
            ["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
             "ec2:DeleteNetworkInterfacePermission"],
            [self._arn("ec2", "network-interface", "*"), self._arn("ec2", "subnet", "*"),
             self._arn("ec2", "security-group", "*")],
            {"ArnEquals": {"ec2:Vpc": vpc_arn}},
            wildcard_reason="Network interfaces are created per job; the ec2:Vpc condition limits every "
            "interface, subnet and security group to the evaluation VPC.",
        )  # fmt: skip
        self._add(
            "DescribeJobNetwork",
            [a for a in UNSCOPABLE_ACTIONS if a.startswith("ec2:")],
            ["*"],
            wildcard_reason="ec2:Describe* calls support no resource-level permissions; they are read-only.",
        )

    def grant_pass_role(self, grantee: iam.IGrantable) -> iam.Grant:
        """iam:PassRole on this role, to SageMaker only."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["iam:PassRole"],
            resource_arns=[self.role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )


class PipelineRole(_ScopedRole):
    """The pipeline role: what SageMaker Pipelines runs the pipeline as (the control plane). It creates the
    processing jobs, but only with this platform's instance types, subnets, security groups, volume and
    output keys and runtime limit (IAM condition keys of CreateProcessingJob), and passes only the job role.

    SageMaker has no condition key for the image of a processing job: the image is fenced by the job
    role, the only role this one can pass, which pulls only from the platform's repository.

    Props:
      job_role: the EvaluationRole the jobs run as (required). key: KMS key of volumes and outputs (required).
      bucket: EvaluationBucket: the pipeline reads the Report step's property file under the output prefix.
      instance_types: instance types the jobs may use (required; the evaluation and the Report types).
      max_runtime_seconds: the jobs' MaxRuntimeInSeconds ceiling. Default ``defaults.MAX_RUNTIME_SECONDS``.
      network: EvaluationNetwork: jobs must use its subnets and job security group. Default: no VPC.
      pipeline_name_prefix: experiments the pipelines create are named after them. Default ``evalstack``.
      existing_role: bring your own role; the same policy is attached to it. Default: create one.

    Attributes: ``role``, ``policy``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        job_role: EvaluationRole,
        key: kms.IKey,
        bucket: EvaluationBucket,
        instance_types: Sequence[str],
        max_runtime_seconds: int = defaults.MAX_RUNTIME_SECONDS,
        network: EvaluationNetwork | None = None,
        pipeline_name_prefix: str = "evalstack",
        existing_role: iam.IRole | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="evalstack: SageMaker pipelines (creates the evaluation processing jobs)",
            existing_role=existing_role,
        )
        if not instance_types:
            raise ValueError("PipelineRole.instance_types: at least one instance type is required")
        self.instance_types = tuple(sorted(set(instance_types)))
        self.max_runtime_seconds = max_runtime_seconds
        jobs = [self._arn("sagemaker", "processing-job", PIPELINE_JOB_PATTERN)]
        jobs_reason = (
            "SageMaker Pipelines names each processing job pipelines-<execution id>-<step>-<suffix> at run time; "
            "the pipelines- prefix is the narrowest scope that matches only pipeline-created jobs."
        )
        self._add(
            "CreateFencedProcessingJobs",
            ["sagemaker:CreateProcessingJob"],
            jobs,
            processing_job_conditions(key, instance_types, max_runtime_seconds, network),
            wildcard_reason=jobs_reason,
        )
        self._add(
            "FollowProcessingJobs",
            ["sagemaker:AddTags", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob"],
            jobs,
            wildcard_reason=jobs_reason,
        )
        self._add(
            "TrackExecutionsAsExperiments",
            ["sagemaker:AddAssociation", "sagemaker:AddTags", "sagemaker:AssociateTrialComponent",
             "sagemaker:CreateExperiment", "sagemaker:CreateTrial", "sagemaker:DescribeExperiment",
             "sagemaker:DescribeTrial"],
            [self._arn("sagemaker", "experiment", f"{pipeline_name_prefix.lower()}*"),
             self._arn("sagemaker", "experiment-trial", "*"),
             self._arn("sagemaker", "experiment-trial-component", "*")],
            wildcard_reason="PipelineExperimentConfig records each execution as a trial named by its execution id "
            "(unknown before it runs) in an experiment named after the pipeline (prefix-scoped).",
        )  # fmt: skip
        self._grant_volume_encryption(key)
        job_role.grant_pass_role(self.policy)
        # The Report step's property file (evaluation.json) is read by the pipeline itself.
        bucket.grant_read_output(self.policy)


@dataclass
class _ArtifactReads:
    """S3 object ARNs the jobs may get, and the buckets and prefixes they may list."""

    objects: set[str] = field(default_factory=set)
    listed_buckets: set[str] = field(default_factory=set)
    listed_prefixes: set[str] = field(default_factory=set)

    def merge(self, other: _ArtifactReads) -> None:
        self.objects |= other.objects
        self.listed_buckets |= other.listed_buckets
        self.listed_prefixes |= other.listed_prefixes


def _artifact_reads(uris: Sequence[str], partition: str) -> _ArtifactReads:
    reads = _ArtifactReads()
    for index, uri in enumerate(uris):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not key or "*" in uri or "?" in uri:
            raise ValueError(
                f"EvaluationRole.model_artifact_uris[{index}]: {uri!r} must be s3://<bucket>/<key> of an object, "
                "or of a prefix ending in '/', without wildcards"
            )
        bucket_arn = f"arn:{partition}:s3:::{bucket}"
        if key.endswith("/"):
            reads.objects.add(f"{bucket_arn}/{key}*")
            reads.listed_buckets.add(bucket_arn)
            reads.listed_prefixes.add(f"{key}*")
        else:
            reads.objects.add(f"{bucket_arn}/{key}")
    return reads


def _jumpstart_reads(model_ids: Sequence[str], partition: str, region: str) -> _ArtifactReads:
    reads = _ArtifactReads()
    if not model_ids:
        return reads
    buckets = [f"arn:{partition}:s3:::{template.format(region=region)}" for template in defaults.JUMPSTART_BUCKETS]
    # The manifest lists every model; the rest (spec files, tarballs, uncompressed prefixes) sit under keys
    # that name the model id, e.g. "meta-textgeneration/meta-textgeneration-llama-2-7b/artifacts/...".
    reads.objects.add(f"{buckets[0]}/{defaults.JUMPSTART_MANIFEST_KEY}")
    for index, model_id in enumerate(model_ids):
        if not _JUMPSTART_ID.fullmatch(model_id):
            raise ValueError(
                f"EvaluationRole.jumpstart_models[{index}]: {model_id!r} is not a JumpStart model id "
                "(letters, digits, '.', '_' and '-'; no 'jumpstart:' prefix or '@version')"
            )
        reads.objects.update(f"{bucket}/*{model_id}*" for bucket in buckets)
        reads.listed_prefixes.add(f"*{model_id}*")
    reads.listed_buckets.update(buckets)
    return reads


def processing_job_conditions(
    key: kms.IKey, instance_types: Sequence[str], max_runtime_seconds: int, network: EvaluationNetwork | None
) -> dict[str, dict[str, object]]:
    """IAM conditions on CreateProcessingJob that hold every job to the platform's settings."""
    every: dict[str, object] = {"sagemaker:InstanceTypes": sorted(set(instance_types))}
    present = {"sagemaker:InstanceTypes": "false", "sagemaker:VolumeKmsKey": "false"}
    conditions: dict[str, dict[str, object]] = {
        # ForAllValues passes when the key is absent: Null=false makes each of them required.
        "ForAllValues:StringEquals": every,
        "Null": present,
        "ArnEquals": {"sagemaker:VolumeKmsKey": key.key_arn},
        # Evaluate steps write no ProcessingOutputConfig; when one is given it must use the key.
        "ArnEqualsIfExists": {"sagemaker:OutputKmsKey": key.key_arn},
        "NumericLessThanEquals": {"sagemaker:MaxRuntimeInSeconds": max_runtime_seconds},
    }
    if network is not None:
        every["sagemaker:VpcSubnets"] = network.subnet_ids
        every["sagemaker:VpcSecurityGroupIds"] = network.security_group_ids
        present["sagemaker:VpcSubnets"] = "false"
        present["sagemaker:VpcSecurityGroupIds"] = "false"
        conditions["Bool"] = {"sagemaker:InterContainerTrafficEncryption": "true"}
    return conditions
