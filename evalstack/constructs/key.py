"""EvaluationKey: the customer managed KMS key every evalstack resource encrypts with."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

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


class EvaluationKey(Construct):
    """A KMS key with yearly rotation and a key policy for the services that use it.

    Props (all keyword, all optional):
      existing_key: bring your own key; then nothing is created and its key policy is yours to manage
        (docs/deploy.md lists the statements it needs). Default: create one.
      alias: key alias. Default: none.
      removal_policy: default ``RemovalPolicy.RETAIN`` (deleting the key makes every result unreadable).
      pending_window: deletion waiting period. Default: 30 days.

    Attributes: ``key`` (kms.IKey), ``created`` (True when this construct made the key).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        existing_key: kms.IKey | None = None,
        alias: str | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        pending_window: Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.created = existing_key is None
        if existing_key is not None:
            self.key: kms.IKey = existing_key
            return
        stack = Stack.of(self)
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="AccountAdministersAndDelegatesKey",
                    principals=[iam.AccountRootPrincipal()],
                    actions=[*KEY_ADMIN_ACTIONS, *KEY_USE_ACTIONS],
                    resources=["*"],  # in a key policy "*" means this key
                ),
                iam.PolicyStatement(
                    sid="CloudWatchLogsEncryptsEvalstackLogGroups",
                    principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                    actions=[
                        "kms:Decrypt",
                        "kms:DescribeKey",
                        "kms:Encrypt",
                        "kms:GenerateDataKey",
                        "kms:ReEncryptFrom",
                        "kms:ReEncryptTo",
                    ],
                    resources=["*"],
                    conditions={
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                                service="logs",
                                resource="log-group",
                                resource_name="*",
                                arn_format=ArnFormat.COLON_RESOURCE_NAME,
                            )
                        }
                    },
                ),
                iam.PolicyStatement(
                    sid="EventBridgeWritesEncryptedDeadLetterQueues",
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=list(ENCRYPT_DECRYPT_ACTIONS),
                    resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
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
            pending_window=pending_window or Duration.days(30),
        )

    def grant_encrypt_decrypt(self, grantee: iam.IGrantable) -> iam.Grant:
        """kms:Decrypt and kms:GenerateDataKey on the key (no wildcard actions)."""
        return grant_key(self.key, grantee)
