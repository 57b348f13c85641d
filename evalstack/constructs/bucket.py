"""EvaluationBucket: datasets in, specs and results out, all under one KMS key."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.grants import (
    DECRYPT_ACTIONS,
    ENCRYPT_DECRYPT_ACTIONS,
    READ_OBJECT_ACTIONS,
    WRITE_OBJECT_ACTIONS,
    grant_key,
    grant_prefix,
)
from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.pipeline.definition import PROPERTY_FILE_PATH, REPORT_STEP, REPORT_WITH_BASE_STEP

# Keys under an execution's output that the job role rewrites by design, so they are exempt from
# write-once: the shards' progress files (evalstack.engine.run.progress_uri) and the property file in
# the Report steps' ProcessingOutput folders, which SageMaker itself uploads with the job role, without
# If-None-Match. As narrow as the names allow: an IAM '*' also matches '/'.
REWRITTEN_OUTPUT_KEYS = (
    "*/progress/*/shard-*-of-*.json",
    f"*/{REPORT_STEP}/{PROPERTY_FILE_PATH}",
    f"*/{REPORT_WITH_BASE_STEP}/{PROPERTY_FILE_PATH}",
)
# What no job may do to any object: delete it or a version of it, or change its ACL or versions.
OBJECT_ALTERING_ACTIONS = ("s3:DeleteObject*", "s3:PutObjectAcl", "s3:PutObjectVersion*")
_WRITE_ONCE_REASON = (
    "Objects under the {key} prefix only, named per execution at run time; creating one requires "
    "If-None-Match (write-once), so a job can add objects but never replace one."
)
_REWRITE_REASON = (
    "Progress files and the Report steps' property files of executions under the {key} prefix, named per "
    "execution at run time; rewritten by design (SageMaker uploads the property file without If-None-Match)."
)


class EvaluationBucket(Construct):
    """A KMS-encrypted, SSL-only, versioned bucket with server access logs and lifecycle rules.

    Layout: datasets under ``dataset_prefix``; results under ``output_prefix`` (``<pipeline>/<token>/...``
    for continuous evaluations); specs and markers the trigger writes under ``control_prefix``
    (``control/<pipeline>/``), which only the trigger may write and the gate trusts.

    Props:
      key: the KMS key. Default: the key ``existing_bucket`` is encrypted with (``encryption_key``);
        required when there is none.
      existing_bucket: bring your own bucket; no bucket is created. Its policy (when it is a ``s3.Bucket``
        of this app) gets the SSE-KMS upload statements. Default: create one.
      existing_logging_bucket: where server access logs go. Default: a new SSE-S3 bucket
        (S3 delivers access logs only to SSE-S3 buckets).
      bucket_name: physical name of the new bucket. Default: generated.
      dataset_prefix, output_prefix, control_prefix: default ``datasets/``, ``evaluations/``, ``control/``.
      noncurrent_version_expiration: default 90 days. log_expiration: default 365 days.
      removal_policy: default ``defaults.REMOVAL_POLICY`` (RETAIN).

    Attributes: ``bucket``, ``logging_bucket`` (None when bringing a bucket), ``key``,
    ``dataset_prefix``, ``output_prefix``, ``control_prefix``, ``output_uri``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey | None = None,
        existing_bucket: s3.IBucket | None = None,
        existing_logging_bucket: s3.IBucket | None = None,
        bucket_name: str | None = None,
        dataset_prefix: str = defaults.DATASET_PREFIX,
        output_prefix: str = defaults.OUTPUT_PREFIX,
        control_prefix: str = defaults.CONTROL_PREFIX,
        noncurrent_version_expiration: Duration = defaults.NONCURRENT_VERSION_EXPIRATION,
        log_expiration: Duration = defaults.ACCESS_LOG_EXPIRATION,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
    ) -> None:
        super().__init__(scope, construct_id)
        key = key or (existing_bucket.encryption_key if existing_bucket is not None else None)
        if key is None:
            raise ValueError(
                "EvaluationBucket.key: required (the existing bucket has no encryption_key to default to)"
            )
        self.key: kms.IKey = key
        self.dataset_prefix = dataset_prefix
        self.output_prefix = output_prefix
        self.control_prefix = control_prefix
        self.logging_bucket: s3.IBucket | None = None
        if existing_bucket is not None:
            self.bucket: s3.IBucket = existing_bucket
        else:
            self.logging_bucket = existing_logging_bucket or s3.Bucket(
                self,
                "AccessLogs",
                encryption=s3.BucketEncryption.S3_MANAGED,
                enforce_ssl=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                # Object ownership is left to CDK: with the feature flag
                # @aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy (set by build_app and cdk.json) log
                # delivery is granted by bucket policy, without it by the LogDeliveryWrite ACL.
                versioned=True,
                lifecycle_rules=[
                    s3.LifecycleRule(
                        id="ExpireAccessLogs",
                        expiration=log_expiration,
                        noncurrent_version_expiration=Duration.days(30),
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ],
                removal_policy=removal_policy,
            )
            self.bucket = s3.Bucket(
                self,
                "Bucket",
                bucket_name=bucket_name,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                enforce_ssl=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                versioned=True,
                server_access_logs_bucket=self.logging_bucket,
                server_access_logs_prefix="evaluation-bucket/",
                lifecycle_rules=[
                    s3.LifecycleRule(
                        id="ExpireNoncurrentVersions",
                        noncurrent_version_expiration=noncurrent_version_expiration,
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ],
                removal_policy=removal_policy,
            )
        self._require_platform_key_on_uploads()
        self.output_uri = f"s3://{self.bucket.bucket_name}/{output_prefix.rstrip('/')}"

    def _require_platform_key_on_uploads(self) -> None:
        # Uploads without encryption headers get the bucket default (SSE-KMS with this key); uploads that
        # ask for anything else are refused. IfExists: the headers are optional, the default applies.
        objects = self.bucket.arn_for_objects("*")
        for sid, header, value in (
            ("DenyUploadsNotSseKms", "s3:x-amz-server-side-encryption", "aws:kms"),
            ("DenyUploadsWithAnotherKey", "s3:x-amz-server-side-encryption-aws-kms-key-id", self.key.key_arn),
        ):
            self.bucket.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=sid,
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["s3:PutObject"],
                    resources=[objects],
                    conditions={"StringNotEqualsIfExists": {header: value}},
                )
            )

    def control_uri(self, pipeline_name: str) -> str:
        """``s3://<bucket>/control/<pipeline>``: the trigger's specs and markers for one pipeline."""
        return f"s3://{self.bucket.bucket_name}/{self._control(pipeline_name)}"

    def _control(self, pipeline_name: str, *parts: str) -> str:
        return "/".join([self.control_prefix.rstrip("/"), pipeline_name, *parts])

    def grant_read_datasets(self, grantee: iam.IGrantable, prefixes: tuple[str, ...] | None = None) -> iam.Grant:
        """Read objects under the dataset prefix (or ``prefixes``) and decrypt them."""
        grant_key(self.key, grantee, DECRYPT_ACTIONS)
        return grant_prefix(self.bucket, grantee, prefixes or (self.dataset_prefix,), READ_OBJECT_ACTIONS)

    def grant_read_output(self, grantee: iam.IGrantable, subprefix: str = "") -> iam.Grant:
        """Read objects under the output prefix (optionally one sub-prefix of it)."""
        grant_key(self.key, grantee, DECRYPT_ACTIONS)
        return grant_prefix(self.bucket, grantee, (self._output(subprefix),), READ_OBJECT_ACTIONS)

    def grant_read_write_output(self, grantee: iam.IGrantable, subprefix: str = "") -> iam.Grant:
        """Read and write objects under the output prefix (optionally one sub-prefix of it)."""
        grant_key(self.key, grantee, ENCRYPT_DECRYPT_ACTIONS)
        return grant_prefix(self.bucket, grantee, (self._output(subprefix),), WRITE_OBJECT_ACTIONS)

    def grant_write_once_output(self, grantee: iam.IGrantable) -> None:
        """What the job role gets: read under the output prefix, and create objects there only with
        ``If-None-Match: *`` (PutObject and CompleteMultipartUpload; the multipart steps before the
        completion take no header), so no object can be replaced. ``REWRITTEN_OUTPUT_KEYS`` are the
        exception. No delete, ACL or version rights, and an explicit Deny of them on every object."""
        grant_key(self.key, grantee, ENCRYPT_DECRYPT_ACTIONS)
        output = self._output("")
        grant_prefix(self.bucket, grantee, (output,), ("s3:GetObject", "s3:AbortMultipartUpload"))
        objects = self.bucket.arn_for_objects(f"{output}/*")
        rewritten = self.rewritten_output_arns()
        for sid, resources, conditions, reason in (
            ("CreateOutputsOnce", [objects], {"StringEquals": {"s3:if-none-match": "*"}}, _WRITE_ONCE_REASON),
            ("UploadOutputParts", [objects], {"Bool": {"s3:ObjectCreationOperation": "false"}}, _WRITE_ONCE_REASON),
            ("RewriteProgressAndReportOutputs", rewritten, None, _REWRITE_REASON),
        ):
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(sid=sid, actions=["s3:PutObject"], resources=resources, conditions=conditions)
            )
            if isinstance(grantee, Construct):
                for arn in resources:
                    acknowledge_wildcard_resource(grantee, arn, reason.format(key=f"{output}/"))
        grantee.grant_principal.add_to_principal_policy(self._deny_altering_objects())

    def deny_output_rewrites(self, role: iam.IRole, scope: Construct) -> bool:
        """The job role's write-once rule as explicit Denies in the bucket policy, which hold whatever
        policy is later attached to the role. Only a bucket policy of ``scope``'s stack can name the
        role (another stack's policy would make the two stacks depend on each other); returns whether
        the statements were added."""
        if not isinstance(self.bucket, s3.Bucket) or Stack.of(self.bucket) is not Stack.of(scope):
            return False
        principal = iam.ArnPrincipal(role.role_arn)
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyJobRewritesOfOutputs",
                effect=iam.Effect.DENY,
                principals=[principal],
                actions=["s3:PutObject"],
                # This bucket's objects other than the rewritten ones (a bucket policy covers its bucket only).
                not_resources=self.rewritten_output_arns(),
                conditions={"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}},
            )
        )
        statement = self._deny_altering_objects()
        statement.add_principals(principal)
        self.bucket.add_to_resource_policy(statement)
        return True

    def rewritten_output_arns(self) -> list[str]:
        return [self.bucket.arn_for_objects(f"{self._output('')}/{key}") for key in REWRITTEN_OUTPUT_KEYS]

    def _deny_altering_objects(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="DenyJobDeletesAndVersionChanges",
            effect=iam.Effect.DENY,
            actions=list(OBJECT_ALTERING_ACTIONS),
            resources=[self.bucket.arn_for_objects("*")],
        )

    def grant_read_specs(self, grantee: iam.IGrantable, pipeline_names: tuple[str, ...]) -> iam.Grant:
        """Read the specs the trigger wrote for these pipelines (``control/<pipeline>/specs/``): what jobs read."""
        grant_key(self.key, grantee, DECRYPT_ACTIONS)
        prefixes = tuple(self._control(name, "specs") for name in pipeline_names)
        return grant_prefix(self.bucket, grantee, prefixes, READ_OBJECT_ACTIONS)

    def grant_read_control(self, grantee: iam.IGrantable, pipeline_name: str) -> iam.Grant:
        """Read the trigger's specs and markers of one pipeline (what the approval gate verifies)."""
        grant_key(self.key, grantee, DECRYPT_ACTIONS)
        return grant_prefix(self.bucket, grantee, (self._control(pipeline_name),), READ_OBJECT_ACTIONS)

    def grant_write_control(self, grantee: iam.IGrantable, pipeline_name: str) -> iam.Grant:
        """Read and write the trigger's specs and markers of one pipeline: the trigger role only."""
        grant_key(self.key, grantee, ENCRYPT_DECRYPT_ACTIONS)
        return grant_prefix(self.bucket, grantee, (self._control(pipeline_name),), WRITE_OBJECT_ACTIONS)

    def _output(self, subprefix: str) -> str:
        return self.output_prefix.rstrip("/") + ("/" + subprefix.strip("/") if subprefix else "")
