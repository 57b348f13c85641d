"""EvaluationKey: the customer managed KMS key every evalstack resource encrypts with, and the key
policy statements a platform needs on whichever key it is given."""

from __future__ import annotations

import json
import re

from aws_cdk import Annotations, ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.grants import ENCRYPT_DECRYPT_ACTIONS, grant_key

# Explicit lists instead of the default key policy's "kms:*", so no statement carries a wildcard action.
KEY_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:CreateGrant", "kms:DeleteAlias", "kms:DescribeKey",
    "kms:DisableKey", "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants", "kms:ListKeyPolicies",
    "kms:ListKeyRotations", "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:RetireGrant", "kms:RevokeGrant",
    "kms:RotateKeyOnDemand", "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:UntagResource",
    "kms:UpdateAlias", "kms:UpdateKeyDescription",
)  # fmt: skip
KEY_USE_ACTIONS = (
    "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom", "kms:ReEncryptTo",
)  # fmt: skip
LOGS_KEY_ACTIONS = (
    "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo",
)  # fmt: skip


def log_group_root(name_prefix: str) -> str:
    """``/evalstack/<name prefix>``: every log group of one platform is named under it."""
    return f"{defaults.LOG_GROUP_ROOT}/{name_prefix}"


def platform_key_statements(key: kms.IKey, name_prefix: str) -> list[iam.PolicyStatement]:
    """The key policy statements a platform named ``name_prefix`` needs on ``key``.

    They name only the key's own account and Region and the platform's log group names, never a
    resource of the platform's stack, so adding them to a key from another stack adds no reference back.
    """
    stack = Stack.of(key)
    sid = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name_prefix))
    log_groups = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"{log_group_root(name_prefix)}/*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    same_account = {"StringEquals": {"aws:SourceAccount": stack.account}}
    return [
        iam.PolicyStatement(
            sid=f"LogsEncrypts{sid}LogGroups",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=list(LOGS_KEY_ACTIONS),
            resources=["*"],  # in a key policy "*" means this key
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
        ),
        iam.PolicyStatement(
            sid="EventBridgeWritesEncryptedDeadLetterQueues",
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=list(ENCRYPT_DECRYPT_ACTIONS),
            resources=["*"],
            conditions=same_account,
        ),
        iam.PolicyStatement(
            sid="CloudWatchAlarmsNotifyEncryptedTopics",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=list(ENCRYPT_DECRYPT_ACTIONS),
            resources=["*"],
            conditions=same_account,
        ),
    ]


def prepare_key(scope: Construct, key: kms.IKey, name_prefix: str) -> None:
    """Add the platform's statements to a ``kms.Key`` (this app owns its policy); for an imported key
    (``IKey``, policy not ours) warn at synth time and list the statements to add by hand."""
    statements = platform_key_statements(key, name_prefix)
    if isinstance(key, kms.Key):
        for statement in statements:
            key.add_to_resource_policy(statement)
        return
    listed = json.dumps([Stack.of(scope).resolve(s.to_statement_json()) for s in statements], sort_keys=True)
    message = (
        f"The key {key.key_arn} is imported, so evalstack cannot edit its key policy. Add these statements "
        f"to it before deploying, or log groups, dead-letter queues and alarm notifications fail: {listed}. "
        "The key policy must also let this account's IAM policies use the key (the root-principal statement)."
    )
    # Several constructs of one platform need the same statements: say it once, on the key.
    if not any(message in str(entry.data) for entry in key.node.metadata):
        Annotations.of(key).add_warning_v2("evalstack:ImportedKeyPolicy", message)


class EvaluationKey(Construct):
    """A KMS key with yearly rotation; the account administers it and IAM policies may use it.

    Props (all keyword, all optional):
      existing_key: bring your own key; nothing is created. A ``kms.Key`` of this app gets the
        platform's statements (see :func:`prepare_key`); an imported key gets a synth-time warning listing them.
      alias: key alias. Default: none.
      removal_policy: default ``defaults.REMOVAL_POLICY`` (RETAIN: deleting the key makes every result unreadable).
      pending_window: deletion waiting period. Default ``defaults.KEY_PENDING_WINDOW`` (30 days).

    Attributes: ``key`` (kms.IKey), ``created`` (True when this construct made the key).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        existing_key: kms.IKey | None = None,
        alias: str | None = None,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
        pending_window: Duration = defaults.KEY_PENDING_WINDOW,
    ) -> None:
        super().__init__(scope, construct_id)
        self.created = existing_key is None
        if existing_key is not None:
            self.key: kms.IKey = existing_key
            return
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="AccountAdministersAndDelegatesKey",
                    principals=[iam.AccountRootPrincipal()],
                    actions=[*KEY_ADMIN_ACTIONS, *KEY_USE_ACTIONS],
                    resources=["*"],  # in a key policy "*" means this key
                ),
            ]
        )
        self.key = kms.Key(
            self,
            "Key",
            description="evalstack: evaluation data, results, logs, queues and notifications",
            enable_key_rotation=True,
            alias=alias,
            policy=policy,
            removal_policy=removal_policy,
            pending_window=pending_window,
        )

    def grant_encrypt_decrypt(self, grantee: iam.IGrantable) -> iam.Grant:
        """kms:Decrypt and kms:GenerateDataKey on the key (no wildcard actions)."""
        return grant_key(self.key, grantee)
