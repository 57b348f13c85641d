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
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from evalstack.constructs import defaults
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
    failure_topic: where an asynchronous invocation that failed every retry is announced (required);
    log_group_name: default generated (EvaluationPlatform names them ``/evalstack/<prefix>/<function>``,
    the names the key's Logs statement allows); timeout (default 1 minute), memory_size (default
    ``defaults.FUNCTION_MEMORY_MB``), retry_attempts (default ``defaults.FUNCTION_RETRY_ATTEMPTS``),
    max_event_age (default 6 hours), reserved_concurrency (default none), log_retention (default one
    year), removal_policy of the log group (default ``defaults.REMOVAL_POLICY``).

    A failed event lands once: in the dead-letter queue (DeadLetterConfig). The on-failure destination
    is the topic, which carries the notice, not a second copy in a queue.

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
        failure_topic: sns.ITopic,
        log_group_name: str | None = None,
        timeout: Duration | None = None,
        memory_size: int = defaults.FUNCTION_MEMORY_MB,
        retry_attempts: int = defaults.FUNCTION_RETRY_ATTEMPTS,
        max_event_age: Duration | None = None,
        reserved_concurrency: int | None = None,
        log_retention: logs.RetentionDays = defaults.LOG_RETENTION,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=log_group_name,
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=defaults.DLQ_RETENTION,
        )
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        # The DLQ and the failure destination are wired at the CloudFormation level (below) because the
        # L2 props would also grant wildcard KMS actions (kms:GenerateDataKey*, kms:ReEncrypt*).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="SendToDeadLetterQueue",
                actions=["sqs:SendMessage"],
                resources=[self.dead_letter_queue.queue_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="AnnounceFailures", actions=["sns:Publish"], resources=[failure_topic.topic_arn])
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
            reserved_concurrent_executions=reserved_concurrency,
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
        invoke_config = self.function.node.find_child("EventInvokeConfig").node.default_child
        invoke_config.destination_config = lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
            on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(destination=failure_topic.topic_arn)
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
            "This queue is the terminal dead-letter queue of the function, its schedule, its rules and its "
            "retry queue; a redrive target for it would only move the same failed events one hop further. "
            "Redrive its messages back to the function's source once the cause is fixed (docs/deploy.md).",
        )
