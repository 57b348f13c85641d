"""Grants with explicit action lists.

CDK's convenience grants (``bucket.grant_read``, ``key.grant_encrypt_decrypt``, ...) emit wildcard
actions such as ``s3:GetObject*`` and ``kms:GenerateDataKey*``. evalstack grants name every action.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from evalstack.constructs.nag import acknowledge_wildcard_resource

# What a principal needs to read and write SSE-KMS objects, queues and topics encrypted with the key.
ENCRYPT_DECRYPT_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
DECRYPT_ACTIONS = ("kms:Decrypt",)
READ_OBJECT_ACTIONS = ("s3:GetObject",)
WRITE_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")


def grant_key(key: kms.IKey, grantee: iam.IGrantable, actions: tuple[str, ...] = ENCRYPT_DECRYPT_ACTIONS) -> iam.Grant:
    return iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[key.key_arn])


def grant_prefix(
    bucket: s3.IBucket, grantee: iam.IGrantable, prefixes: tuple[str, ...], actions: tuple[str, ...]
) -> iam.Grant:
    """Object actions under ``prefixes`` and ListBucket restricted to them by the s3:prefix condition."""
    keys = [p.rstrip("/") + "/" for p in prefixes]
    arns = [bucket.arn_for_objects(k + "*") for k in keys]
    grant = iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=arns)
    if isinstance(grantee, Construct):
        for key, arn in zip(keys, arns, strict=True):
            acknowledge_wildcard_resource(
                grantee,
                arn,
                f"Objects under the {key} prefix only: evaluations write object keys named per execution "
                "and read datasets by name at run time, so the prefix is the narrowest fixed scope.",
            )
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:ListBucket"],
        resource_arns=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [k + "*" for k in keys]}},
    )
    return grant
