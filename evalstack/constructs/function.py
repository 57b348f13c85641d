"""EvaluationFunction: a Lambda handler from evalstack/lambdas with the platform's guard rails.

Every function gets its own role (no AWS managed policies; logs scoped to its own log group), a
KMS-encrypted log group with retention, Lambda's JSON log format, X-Ray tracing, a bounded timeout
and memory size, async retries and an encrypted SQS dead-letter queue.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from evalstack.constructs.grants import ENCRYPT_DECRYPT_ACTIONS, grant_key
from evalstack.constructs.nag import SERVERLESS, acknowledge, acknowledge_wildcard_resource

# The newest Python runtime this aws-cdk-lib knows (2.275.0 offers python3.14).
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
# The asset is the evalstack package directory filtered down to lambdas/*.py, so the handlers deploy as
# the top-level package ``lambdas`` and nothing heavy of evalstack ships with them.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_ASSET_EXCLUDE = ["*", "!lambdas", "!lambdas/*.py"]


def lambda_code() -> lambda_.Code:
    return lambda_.Code.from_asset(str(_PACKAGE_DIR), exclude=_ASSET_EXCLUDE)


class EvaluationFunction(Construct):
    """Props: handler (``module.function`` inside evalstack/lambdas), key, description, environment;
    timeout (default 1 minute), memory_size (default 256 MB), retry_attempts (default 2),
    max_event_age (default 6 hours), log_retention (default one year).

    Attributes: ``function``, ``role``, ``log_group``, ``dead_letter_queue``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        key: kms.IKey,
        description: str,
        environment: dict[str, str],
        timeout: Duration | None = None,
        memory_size: int = 256,
        retry_attempts: int = 2,
        max_event_age: Duration | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "Logs", encryption_key=key, retention=log_retention, removal_policy=RemovalPolicy.RETAIN
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        # The DLQ is wired at the CloudFormation level (below) because the L2 prop would also grant
        # wildcard KMS actions (kms:GenerateDataKey*, kms:ReEncrypt*).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="SendToDeadLetterQueue",
                actions=["sqs:SendMessage"],
                resources=[self.dead_letter_queue.queue_arn],
            )
        )
        grant_key(key, self.role, ENCRYPT_DECRYPT_ACTIONS)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=LAMBDA_RUNTIME,
            code=lambda_code(),
            handler=f"lambdas.{handler}",
            description=description,
            role=self.role,
            environment=environment,
            environment_encryption=key,
            timeout=timeout or Duration.minutes(1),
            memory_size=memory_size,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            tracing=lambda_.Tracing.ACTIVE,
            retry_attempts=retry_attempts,
            max_event_age=max_event_age or Duration.hours(6),
        )
        cfn = self.function.node.default_child
        # The L2 function depends on the whole role construct; the role itself is already implied by
        # the Role GetAtt (cfn-lint W3005), so only its policy stays in DependsOn.
        policy = self.role.node.find_child("DefaultPolicy").node.default_child
        cfn.add_override("DependsOn", [Stack.of(self).get_logical_id(policy)])
        cfn.dead_letter_config = lambda_.CfnFunction.DeadLetterConfigProperty(
            target_arn=self.dead_letter_queue.queue_arn
        )
        # Failure destination for async invocations, also at the CloudFormation level (see above).
        invoke_config = self.function.node.find_child("EventInvokeConfig").node.default_child
        invoke_config.destination_config = lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
            on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(destination=self.dead_letter_queue.queue_arn)
        )
        acknowledge_wildcard_resource(
            self.role,
            "*",
            "Only xray:PutTraceSegments and xray:PutTelemetryRecords (added by Tracing.ACTIVE) use '*': "
            "X-Ray supports no resource-level permissions for them.",
        )
        acknowledge(
            self.dead_letter_queue,
            SERVERLESS,
            "Serverless-SQSRedrivePolicy",
            "This queue is the terminal dead-letter queue of the function, its schedule and its rules; "
            "a redrive target for it would only move the same failed events one hop further.",
        )
