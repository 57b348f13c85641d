"""ContinuousEvaluation: evaluate the newest model package on a schedule and on registration."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from evalstack.catalog.limits import MAX_CONCURRENT_EVALUATIONS
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.function import EvaluationFunction
from evalstack.constructs.grants import ENCRYPT_DECRYPT_ACTIONS, grant_key
from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.constructs.pipeline import EvaluationPipeline
from evalstack.lambdas.spec import TEMPLATE_FIELDS
from evalstack.lambdas.trigger import SCHEDULER_INPUT
from evalstack.spec import EvaluationSpec

DEFAULT_SCHEDULE = "rate(1 day)"
DEFAULT_CANDIDATE_STATUSES = ("Approved", "PendingManualApproval")
# Lambda caps all environment variables of a function at 4 KB together.
_MAX_TEMPLATE_CHARS = 3000
# A placeholder model package for validating the template at synth time.
_PLACEHOLDER_PACKAGE = "arn:aws:sagemaker:us-east-1:111111111111:model-package/placeholder/1"


def validate_template(template: dict[str, Any], model_package_group: str) -> str:
    """The template as the trigger's SPEC_TEMPLATE, after EvaluationSpec accepted it with a placeholder model."""
    # The trigger's build_spec refuses any other field: refuse it here, before it deploys.
    for name in sorted(template):
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"ContinuousEvaluation.evaluation: field {name!r} cannot be set in the template "
                f"(the trigger fills in the model fields); allowed: {list(TEMPLATE_FIELDS)}"
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
    """Props:
      pipeline: the EvaluationPipeline to start (its eval type must match ``evaluation``) (required).
      bucket: EvaluationBucket; specs and results go under ``<output prefix>/<pipeline name>/`` (required).
      key: KMS key (required). model_package_group: the group to evaluate (required).
      evaluation: the spec template: only the trigger's TEMPLATE_FIELDS (required).
      schedule: EventBridge Scheduler expression. Default ``rate(1 day)``; None disables the schedule.
      schedule_timezone: default ``UTC``.
      evaluate_new_packages: also evaluate each newly registered (PendingManualApproval) package. Default True.
      candidate_statuses: which package statuses the schedule picks the newest of.
        Default Approved and PendingManualApproval.
      concurrency_pipelines: pipelines whose executions count against the limit. Default: ``pipeline`` only.
      max_concurrent_evaluations: default 10 (the service limit).

    Attributes: ``trigger`` (EvaluationFunction), ``schedule`` (CfnSchedule or None),
    ``scheduler_role``, ``package_rule`` (events.Rule or None).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pipeline: EvaluationPipeline,
        bucket: EvaluationBucket,
        key: kms.IKey,
        model_package_group: str,
        evaluation: dict[str, Any],
        schedule: str | None = DEFAULT_SCHEDULE,
        schedule_timezone: str = "UTC",
        evaluate_new_packages: bool = True,
        candidate_statuses: Sequence[str] = DEFAULT_CANDIDATE_STATUSES,
        concurrency_pipelines: Sequence[EvaluationPipeline] = (),
        max_concurrent_evaluations: int = MAX_CONCURRENT_EVALUATIONS,
    ) -> None:
        super().__init__(scope, construct_id)
        template = validate_template(evaluation, model_package_group)
        counted = list(dict.fromkeys([pipeline, *concurrency_pipelines]))
        self.trigger = EvaluationFunction(
            self,
            "Trigger",
            handler="trigger.handler",
            key=key,
            description=f"evalstack: start {pipeline.pipeline_name} for the newest package of {model_package_group}",
            environment={
                "PIPELINE_NAME": pipeline.pipeline_name,
                "MODEL_PACKAGE_GROUP": model_package_group,
                "OUTPUT_URI": bucket.output_uri,
                "SPEC_TEMPLATE": template,
                "CANDIDATE_STATUSES": ",".join(candidate_statuses),
                "CONCURRENCY_PIPELINES": ",".join(p.pipeline_name for p in counted),
                "MAX_CONCURRENT_EVALUATIONS": str(max_concurrent_evaluations),
                "KMS_KEY_ID": key.key_arn,
            },
            timeout=Duration.minutes(2),
        )
        role = self.trigger.role
        bucket.grant_read_write_output(role, subprefix=pipeline.pipeline_name)
        pipeline.grant_start_execution(role)
        for other in counted[1:]:
            other.grant_list_executions(role)
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
                sid="ReadCandidateBaseModel",
                # The candidate's evalstack:base_model metadata, when the group has no other Approved package.
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
