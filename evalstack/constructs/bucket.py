"""EvaluationBucket: datasets in, specs and results out, all under one KMS key."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from evalstack.constructs.grants import (
    DECRYPT_ACTIONS,
    ENCRYPT_DECRYPT_ACTIONS,
    READ_OBJECT_ACTIONS,
    WRITE_OBJECT_ACTIONS,
    grant_key,
    grant_prefix,
)

DEFAULT_DATASET_PREFIX = "datasets/"
DEFAULT_OUTPUT_PREFIX = "evaluations/"


class EvaluationBucket(Construct):
    """A KMS-encrypted, SSL-only, versioned bucket with server access logs and lifecycle rules.

    Props:
      key: the KMS key (required unless ``existing_bucket`` is given; then it is the key that bucket uses).
      existing_bucket: bring your own bucket; nothing is created. Default: create one.
      existing_logging_bucket: where server access logs go. Default: a new SSE-S3 bucket
        (S3 delivers access logs only to SSE-S3 buckets).
      dataset_prefix: default ``datasets/``; output_prefix: default ``evaluations/``.
      noncurrent_version_expiration: default 90 days. log_expiration: default 365 days.
      removal_policy: default ``RemovalPolicy.RETAIN``.

    Attributes: ``bucket``, ``logging_bucket`` (None when bringing a bucket), ``key``,
    ``dataset_prefix``, ``output_prefix``, ``output_uri``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        existing_bucket: s3.IBucket | None = None,
        existing_logging_bucket: s3.IBucket | None = None,
        dataset_prefix: str = DEFAULT_DATASET_PREFIX,
        output_prefix: str = DEFAULT_OUTPUT_PREFIX,
        noncurrent_version_expiration: Duration | None = None,
        log_expiration: Duration | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        self.dataset_prefix = dataset_prefix
        self.output_prefix = output_prefix
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
                        expiration=log_expiration or Duration.days(365),
                        noncurrent_version_expiration=Duration.days(30),
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ],
                removal_policy=removal_policy,
            )
            self.bucket = s3.Bucket(
                self,
                "Bucket",
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
                        noncurrent_version_expiration=noncurrent_version_expiration or Duration.days(90),
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ],
                removal_policy=removal_policy,
            )
        self.output_uri = f"s3://{self.bucket.bucket_name}/{output_prefix.rstrip('/')}"

    def grant_read_datasets(self, grantee: iam.IGrantable, prefixes: tuple[str, ...] | None = None) -> iam.Grant:
        """Read objects under the dataset prefix (or ``prefixes``) and decrypt them."""
        grant_key(self.key, grantee, DECRYPT_ACTIONS)
        return grant_prefix(self.bucket, grantee, prefixes or (self.dataset_prefix,), READ_OBJECT_ACTIONS)

    def grant_read_write_output(self, grantee: iam.IGrantable, subprefix: str = "") -> iam.Grant:
        """Read and write objects under the output prefix (optionally one sub-prefix of it)."""
        grant_key(self.key, grantee, ENCRYPT_DECRYPT_ACTIONS)
        prefix = self.output_prefix.rstrip("/") + ("/" + subprefix.strip("/") if subprefix else "")
        return grant_prefix(self.bucket, grantee, (prefix,), WRITE_OBJECT_ACTIONS)
