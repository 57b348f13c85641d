"""ContinuousEvaluation: evaluate the newest pending model package on a schedule and on registration."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.function import EvaluationFunction
from evalstack.constructs.grants import ENCRYPT_DECRYPT_ACTIONS, grant_key
from evalstack.constructs.key import log_group_root, prepare_key
from evalstack.constructs.nag import SERVERLESS, acknowledge, acknowledge_wildcard_resource
from evalstack.constructs.operations import EvaluationAlarms
from evalstack.constructs.pipeline import EvaluationPipeline
from evalstack.lambdas.spec import TEMPLATE_FIELDS
from evalstack.lambdas.trigger import SCHEDULER_INPUT
from evalstack.spec import EvaluationSpec

# Lambda caps all environment variables of a function at 4 KB together.
_MAX_TEMPLATE_CHARS = 3000
# A placeholder model package for validating the template at synth time.
_PLACEHOLDER_PACKAGE = "arn:aws:sagemaker:us-east-1:111111111111:model-package/placeholder/1"


def validate_template(
    template: dict[str, Any], model_package_group: str, mlflow_tracking_server_arn: str | None = None
) -> str:
    """The template as the trigger's SPEC_TEMPLATE, after EvaluationSpec accepted it with a placeholder model."""
    # The trigger's build_spec refuses any other field: refuse it here, before it deploys.
    for name in sorted(template):
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"ContinuousEvaluation.evaluation: field {name!r} cannot be set in the template "
                f"(the trigger fills in the model fields); allowed: {list(TEMPLATE_FIELDS)}"
            )
    mlflow = template.get("mlflow") or {}
    if mlflow and mlflow.get("resource_arn") != mlflow_tracking_server_arn:
        raise ValueError(
            "ContinuousEvaluation.evaluation: mlflow tracking needs mlflow.resource_arn to be the platform's "
            f"mlflow_tracking_server_arn (the job role may use only that server); got "
            f"{mlflow.get('resource_arn')!r}, configured {mlflow_tracking_server_arn!r}"
        )
    EvaluationSpec.from_dict(
        {**template, "model": _PLACEHOLDER_PACKAGE, "model_package_group": model_package_group},
        source="ContinuousEvaluation.evaluation",
    )
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    if len(text) > _MAX_TEMPLATE_CHARS:
        raise ValueError(
            f"ContinuousEvaluation.evaluation: {len(text)} characters of JSON exceeds {_MAX_TEMPLATE_CHARS} "
            "(Lambda environment limit); keep long judge prompts in a dataset-side file"
        )
    return text


class ContinuousEvaluation(Construct):
    """Evaluate the newest pending package of a group on a schedule and on registration.

    The trigger writes each spec and its execution marker under ``control/<pipeline>/`` of the bucket,
    which only the trigger role may write; the approval gate (ModelApprovalGate) trusts only that.
    An evaluation refused at the concurrency limit goes to an SQS retry queue (delay <= 15 minutes,
    an event source of the trigger) and runs later; a message that keeps failing moves to the
    trigger's dead-letter queue after ``retry_max_receives`` receives.

    Props:
      pipeline: the EvaluationPipeline to start (its eval type must match ``evaluation``) (required).
      bucket: EvaluationBucket (required). key: KMS key (required).
      alarms: EvaluationAlarms: failure notices and alarms on the trigger (required).
      model_package_group: the group to evaluate (required).
      evaluation: the spec template: only the trigger's TEMPLATE_FIELDS (required).
      schedule: EventBridge Scheduler expression. Default ``defaults.SCHEDULE``; None disables the schedule.
      schedule_timezone: default ``defaults.SCHEDULE_TIMEZONE``.
      evaluate_new_packages: also evaluate each newly registered (PendingManualApproval) package. Default True.
      candidate_statuses: which package statuses the schedule picks the newest of.
        Default ``defaults.CANDIDATE_STATUSES`` (PendingManualApproval: a person's decision is never re-gated).
      concurrency_pipelines: pipelines whose executions count against the limit. Default: ``pipeline`` only.
      max_concurrent_evaluations: default ``defaults.MAX_CONCURRENT`` (the service limit).
      retry_delay: first delay of a refused evaluation (doubles per attempt). Default ``defaults.RETRY_DELAY``.
      retry_max_receives: default ``defaults.RETRY_MAX_RECEIVES``.
      reserved_concurrency: of the trigger. Default ``defaults.TRIGGER_RESERVED_CONCURRENCY``.
      mlflow_tracking_server_arn: the server a template's ``mlflow.resource_arn`` must name. Default none
        (then a template with mlflow settings is refused).
      name_prefix: the trigger logs to ``/evalstack/<name_prefix>/<pipeline>-trigger``, a name the key's
        Logs statement covers (added here to a ``kms.Key``). Default ``evalstack``.
      log_retention, removal_policy: of the log group. Defaults ``defaults.LOG_RETENTION``, ``REMOVAL_POLICY``.

    Attributes: ``trigger`` (EvaluationFunction), ``retry_queue``, ``schedule`` (CfnSchedule or None),
    ``scheduler_role``, ``package_rule`` (events.Rule or None), ``pipeline``, ``bucket``,
    ``model_package_group``, ``spec_template`` (the canonical JSON text), ``control_uri``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pipeline: EvaluationPipeline,
        bucket: EvaluationBucket,
        key: kms.IKey,
        alarms: EvaluationAlarms,
        model_package_group: str,
        evaluation: dict[str, Any],
        schedule: str | None = defaults.SCHEDULE,
        schedule_timezone: str = defaults.SCHEDULE_TIMEZONE,
        evaluate_new_packages: bool = True,
        candidate_statuses: Sequence[str] = defaults.CANDIDATE_STATUSES,
        concurrency_pipelines: Sequence[EvaluationPipeline] = (),
        max_concurrent_evaluations: int = defaults.MAX_CONCURRENT,
        retry_delay: Duration = defaults.RETRY_DELAY,
        retry_max_receives: int = defaults.RETRY_MAX_RECEIVES,
        reserved_concurrency: int = defaults.TRIGGER_RESERVED_CONCURRENCY,
        mlflow_tracking_server_arn: str | None = None,
        name_prefix: str = "evalstack",
        log_retention: logs.RetentionDays = defaults.LOG_RETENTION,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
    ) -> None:
        super().__init__(scope, construct_id)
        prepare_key(self, key, name_prefix)
        self.spec_template = validate_template(evaluation, model_package_group, mlflow_tracking_server_arn)
        self.pipeline = pipeline
        self.bucket = bucket
        self.model_package_group = model_package_group
        self.control_uri = bucket.control_uri(pipeline.pipeline_name)
        counted = list(dict.fromkeys([pipeline, *concurrency_pipelines]))
        timeout = Duration.minutes(2)
        # The trigger re-sends a refused event with DelaySeconds; Lambda keeps each received message
        # invisible for 6 function timeouts (cdk-nag Serverless-LambdaEventSourceSQSVisibilityTimeout).
        self.retry_queue = sqs.Queue(
            self,
            "RetryQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(timeout.to_seconds() * 6),
            retention_period=defaults.DLQ_RETENTION,
        )
        self.trigger = EvaluationFunction(
            self,
            "Trigger",
            handler="trigger.handler",
            key=key,
            failure_topic=alarms.topic,
            log_group_name=f"{log_group_root(name_prefix)}/{pipeline.pipeline_name}-trigger",
            reserved_concurrency=reserved_concurrency,
            log_retention=log_retention,
            removal_policy=removal_policy,
            description=f"evalstack: start {pipeline.pipeline_name} for the newest package of {model_package_group}",
            environment={
                "PIPELINE_NAME": pipeline.pipeline_name,
                "MODEL_PACKAGE_GROUP": model_package_group,
                "OUTPUT_URI": bucket.output_uri,
                "CONTROL_URI": self.control_uri,
                "SPEC_TEMPLATE": self.spec_template,
                "CANDIDATE_STATUSES": ",".join(candidate_statuses),
                "CONCURRENCY_PIPELINES": ",".join(p.pipeline_name for p in counted),
                "MAX_CONCURRENT_EVALUATIONS": str(max_concurrent_evaluations),
                # Evaluate and Report run one after the other, each within MaxRuntimeInSeconds, plus retries.
                "MAX_EXECUTION_HOURS": str(3 * pipeline.max_runtime_seconds / 3600),
                "RETRY_QUEUE_URL": self.retry_queue.queue_url,
                "RETRY_DELAY_SECONDS": str(int(retry_delay.to_seconds())),
                "KMS_KEY_ID": key.key_arn,
            },
            timeout=timeout,
        )
        cfn_queue = self.retry_queue.node.default_child
        cfn_queue.redrive_policy = {
            "deadLetterTargetArn": self.trigger.dead_letter_queue.queue_arn,
            "maxReceiveCount": retry_max_receives,
        }
        alarms.watch_function("Trigger", self.trigger, f"{pipeline.pipeline_name} trigger")
        role = self.trigger.role
        bucket.grant_write_control(role, pipeline.pipeline_name)
        pipeline.grant_start_execution(role)
        for other in counted[1:]:
            other.grant_list_executions(role)
        role.add_to_policy(
            iam.PolicyStatement(sid="DeferRefusedEvaluations", actions=["sqs:SendMessage"],
                                resources=[self.retry_queue.queue_arn])
        )  # fmt: skip
        mapping = lambda_.EventSourceMapping(
            self,
            "RetryQueueSource",
            target=self.trigger.function,
            event_source_arn=self.retry_queue.queue_arn,
            batch_size=1,
            report_batch_item_failures=True,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ConsumeRetryQueue",
                actions=["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                         "sqs:ReceiveMessage"],
                resources=[self.retry_queue.queue_arn],
            )
        )  # fmt: skip
        # Lambda checks the role's SQS permissions when it creates the mapping.
        mapping.node.add_dependency(role.node.find_child("DefaultPolicy"))
        acknowledge(
            mapping,
            SERVERLESS,
            "Serverless-LambdaEventSourceMappingDestination",
            "An SQS event source takes no on-failure destination (Lambda supports it for streams and Kafka); "
            "the retry queue's redrive policy moves a message that keeps failing to the trigger's DLQ.",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FindNewestModelPackage",
                # ListModelPackages supports no resource-level permissions.
                actions=["sagemaker:ListModelPackages"],
                resources=["*"],
            )
        )
        packages = Stack.of(self).format_arn(
            service="sagemaker", resource="model-package", resource_name=f"{model_package_group.lower()}/*"
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadCandidateModelPackage",
                # The candidate's status, and its evalstack:base_model metadata when the group has no other
                # Approved package.
                actions=["sagemaker:DescribeModelPackage"],
                resources=[packages],
            )
        )
        acknowledge_wildcard_resource(
            role, packages, "Versions of the evaluated model package group only: they are registered after deployment."
        )
        acknowledge_wildcard_resource(
            role,
            "*",
            "sagemaker:ListModelPackages (and, from Tracing.ACTIVE, xray:PutTraceSegments and "
            "xray:PutTelemetryRecords) support no resource-level permissions; the list call is read-only and "
            "the trigger filters by the configured group.",
        )
        self.scheduler_role: iam.Role | None = None
        self.schedule: scheduler.CfnSchedule | None = None
        if schedule is not None:
            self._add_schedule(schedule, schedule_timezone, key)
        self.package_rule: events.Rule | None = None
        if evaluate_new_packages:
            self.package_rule = events.Rule(
                self,
                "NewModelPackage",
                description=f"evalstack: evaluate each new package of {model_package_group}",
                event_pattern=events.EventPattern(
                    source=["aws.sagemaker"],
                    detail_type=["SageMaker Model Package State Change"],
                    detail={
                        "ModelPackageGroupName": [model_package_group],
                        "ModelPackageStatus": ["Completed"],
                        # Only pending packages: the approval gate's own Approved/Rejected updates
                        # emit this event too and must not start another evaluation.
                        "ModelApprovalStatus": ["PendingManualApproval"],
                    },
                ),
                targets=[
                    targets.LambdaFunction(
                        self.trigger.function,
                        # Only failed deliveries land here; a failed invocation lands in the same queue
                        # through the function's DeadLetterConfig, never both.
                        dead_letter_queue=self.trigger.dead_letter_queue,
                        retry_attempts=4,
                        max_event_age=Duration.hours(2),
                    )
                ],
            )

    def _add_schedule(self, expression: str, timezone: str, key: kms.IKey) -> None:
        account = Stack.of(self).account
        role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": account}}
            ),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeTrigger", actions=["lambda:InvokeFunction"], resources=[self.trigger.function.function_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="SendToDeadLetterQueue",
                actions=["sqs:SendMessage"],
                resources=[self.trigger.dead_letter_queue.queue_arn],
            )
        )
        grant_key(key, role, ENCRYPT_DECRYPT_ACTIONS)
        self.scheduler_role = role
        self.schedule = scheduler.CfnSchedule(
            self,
            "Schedule",
            description="evalstack: continuous evaluation",
            schedule_expression=expression,
            schedule_expression_timezone=timezone,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            kms_key_arn=key.key_arn,
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.trigger.function.function_arn,
                role_arn=role.role_arn,
                input=json.dumps(SCHEDULER_INPUT, sort_keys=True),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=3600, maximum_retry_attempts=3
                ),
                dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(
                    arn=self.trigger.dead_letter_queue.queue_arn
                ),
            ),
        )
