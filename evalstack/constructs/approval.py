"""ModelApprovalGate: approve or reject model packages from the evaluation report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.function import EvaluationFunction
from evalstack.constructs.grants import READ_OBJECT_ACTIONS, grant_prefix
from evalstack.constructs.nag import acknowledge_wildcard_resource
from evalstack.constructs.pipeline import EvaluationPipeline


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
    """Props:
      pipelines: the EvaluationPipelines whose finished executions are judged (required).
      bucket: EvaluationBucket holding the reports (required). key: KMS key (required).
      model_package_groups: groups whose packages the gate may update (required).
      thresholds: ApprovalThresholds (required).
      existing_topic: bring your own SNS topic. Default: a new topic encrypted with ``key``.

    Attributes: ``gate`` (EvaluationFunction), ``topic``, ``rule``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pipelines: Sequence[EvaluationPipeline],
        bucket: EvaluationBucket,
        key: kms.IKey,
        model_package_groups: Sequence[str],
        thresholds: ApprovalThresholds,
        existing_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic: sns.ITopic = existing_topic or sns.Topic(
            self, "Topic", display_name="evalstack model approvals", master_key=key, enforce_ssl=True
        )
        self.gate = EvaluationFunction(
            self,
            "Gate",
            handler="approval.handler",
            key=key,
            description="evalstack: approve or reject model packages from evaluation reports",
            environment={"TOPIC_ARN": self.topic.topic_arn, **thresholds.environment()},
            timeout=Duration.minutes(1),
        )
        role = self.gate.role
        for pipeline in pipelines:
            pipeline.grant_read_executions(role)
        grant_prefix(bucket.bucket, role, (bucket.output_prefix,), READ_OBJECT_ACTIONS)
        stack = Stack.of(self)
        packages = [
            stack.format_arn(service="sagemaker", resource="model-package", resource_name=f"{g.lower()}/*")
            for g in model_package_groups
        ]
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DecideModelPackages",
                actions=["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                resources=packages,
            )
        )
        for arn in packages:
            acknowledge_wildcard_resource(
                role, arn, "Versions of the gated model package groups only: versions are registered after deployment."
            )
        role.add_to_policy(
            iam.PolicyStatement(sid="NotifyDecision", actions=["sns:Publish"], resources=[self.topic.topic_arn])
        )
        self.rule = events.Rule(
            self,
            "ExecutionFinished",
            description="evalstack: judge finished evaluation executions",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Building Pipeline Execution Status Change"],
                detail={
                    "pipelineArn": [p.pipeline_arn for p in pipelines],
                    "currentPipelineExecutionStatus": ["Succeeded", "Failed", "Stopped"],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.gate.function,
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
