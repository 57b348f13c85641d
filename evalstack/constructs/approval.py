"""ModelApprovalGate: approve or reject the packages the platform evaluated, from their results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.continuous import ContinuousEvaluation
from evalstack.constructs.function import EvaluationFunction
from evalstack.constructs.key import log_group_root, prepare_key
from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.constructs.operations import EvaluationAlarms


@dataclass(frozen=True)
class ApprovalThresholds:
    """Approve when ``metric`` >= min_score, its improvement over base >= min_improvement, and (when
    block_significant_regression) no metric regressed significantly. None disables a threshold."""

    metric: str
    min_score: float | None = None
    min_improvement: float | None = None
    block_significant_regression: bool = True

    def environment(self) -> dict[str, str]:
        return {
            "METRIC": self.metric,
            "MIN_SCORE": "" if self.min_score is None else repr(float(self.min_score)),
            "MIN_IMPROVEMENT": "" if self.min_improvement is None else repr(float(self.min_improvement)),
            "BLOCK_SIGNIFICANT_REGRESSION": "true" if self.block_significant_regression else "false",
        }


class ModelApprovalGate(Construct):
    """Approve or reject the packages a ContinuousEvaluation evaluated, from the evaluation's results.

    The gate acts only on executions the trigger started: it reads the trigger's marker under
    ``control/<pipeline>/`` (which job code cannot write) and checks the package group, the spec
    template's digest and the package's status before it touches a package. An unverifiable or failed
    execution is reported on the topic and leaves the package as it is.

    Props:
      continuous: the ContinuousEvaluation whose executions are judged (required): its pipeline,
        bucket, group, template and control prefix.
      key: KMS key (required). thresholds: ApprovalThresholds (required).
      alarms: EvaluationAlarms: failure notices and alarms on the gate (required).
      existing_topic: where decisions are published. Default: a new topic encrypted with ``key``, SSL only.
      gated_statuses: package statuses the gate may change. Default ``defaults.GATED_STATUSES``
        (PendingManualApproval: a person's decision is never overridden).
      reserved_concurrency: default ``defaults.GATE_RESERVED_CONCURRENCY`` (1: decisions never race).
      name_prefix: the gate logs to ``/evalstack/<name_prefix>/<pipeline>-gate``, a name the key's Logs
        statement covers (added here to a ``kms.Key``). Default ``evalstack``.
      log_retention, removal_policy: of the log group. Defaults ``defaults.LOG_RETENTION``, ``REMOVAL_POLICY``.

    Attributes: ``gate`` (EvaluationFunction), ``topic``, ``rule``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        continuous: ContinuousEvaluation,
        key: kms.IKey,
        thresholds: ApprovalThresholds,
        alarms: EvaluationAlarms,
        existing_topic: sns.ITopic | None = None,
        gated_statuses: Sequence[str] = defaults.GATED_STATUSES,
        reserved_concurrency: int = defaults.GATE_RESERVED_CONCURRENCY,
        name_prefix: str = "evalstack",
        log_retention: logs.RetentionDays = defaults.LOG_RETENTION,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
    ) -> None:
        super().__init__(scope, construct_id)
        prepare_key(self, key, name_prefix)
        pipeline = continuous.pipeline
        bucket = continuous.bucket
        group = continuous.model_package_group
        self.topic: sns.ITopic = existing_topic or sns.Topic(
            self, "Topic", display_name="evalstack model approvals", master_key=key, enforce_ssl=True
        )
        self.gate = EvaluationFunction(
            self,
            "Gate",
            handler="approval.handler",
            key=key,
            failure_topic=alarms.topic,
            log_group_name=f"{log_group_root(name_prefix)}/{pipeline.pipeline_name}-gate",
            reserved_concurrency=reserved_concurrency,
            log_retention=log_retention,
            removal_policy=removal_policy,
            description=f"evalstack: approve or reject packages of {group} from {pipeline.pipeline_name} results",
            environment={
                "TOPIC_ARN": self.topic.topic_arn,
                "PIPELINE_NAME": pipeline.pipeline_name,
                "MODEL_PACKAGE_GROUP": group,
                "CONTROL_URI": continuous.control_uri,
                "SPEC_TEMPLATE": continuous.spec_template,
                "GATED_STATUSES": ",".join(gated_statuses),
                **thresholds.environment(),
            },
            timeout=Duration.minutes(1),
        )
        alarms.watch_function("Gate", self.gate, f"{pipeline.pipeline_name} approval gate")
        role = self.gate.role
        bucket.grant_read_control(role, pipeline.pipeline_name)
        bucket.grant_read_output(role, pipeline.pipeline_name)
        packages = Stack.of(self).format_arn(
            service="sagemaker", resource="model-package", resource_name=f"{group.lower()}/*"
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DecideModelPackages",
                actions=["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                resources=[packages],
            )
        )
        acknowledge_wildcard_resource(
            role, packages, "Versions of the gated model package group only: versions are registered after deployment."
        )
        role.add_to_policy(
            iam.PolicyStatement(sid="NotifyDecision", actions=["sns:Publish"], resources=[self.topic.topic_arn])
        )
        self.rule = events.Rule(
            self,
            "ExecutionFinished",
            description=f"evalstack: judge finished executions of {pipeline.pipeline_name}",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Building Pipeline Execution Status Change"],
                detail={
                    "pipelineArn": [pipeline.pipeline_arn],
                    "currentPipelineExecutionStatus": ["Succeeded", "Failed", "Stopped"],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.gate.function,
                    # Only failed deliveries land here; a failed invocation lands in the same queue
                    # through the function's DeadLetterConfig, never both.
                    dead_letter_queue=self.gate.dead_letter_queue,
                    retry_attempts=4,
                    max_event_age=Duration.hours(2),
                )
            ],
        )

    def grant_subscribe(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sns:Subscribe"], resource_arns=[self.topic.topic_arn]
        )
