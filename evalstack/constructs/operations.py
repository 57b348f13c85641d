"""EvaluationAlarms: CloudWatch alarms on what fails silently otherwise, announced on one SNS topic."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.function import EvaluationFunction

# SageMaker Pipelines publishes per-pipeline execution metrics here (dimension PipelineName).
PIPELINE_METRICS_NAMESPACE = "AWS/Sagemaker/ModelBuildingPipeline"


class EvaluationAlarms(Construct):
    """An alarm for any message in a dead-letter queue, any function error and any failed evaluation.

    Props:
      key: KMS key of the new topic (required).
      existing_topic: bring your own topic (its key policy must let CloudWatch use its key). Default:
        a new topic encrypted with ``key``, SSL only.
      period: evaluation period of every alarm. Default ``defaults.ALARM_PERIOD``.

    Attributes: ``topic``, ``alarms`` (list). Methods add alarms: ``watch_queue``, ``watch_function``,
    ``watch_pipeline``; ``grant_subscribe`` lets a principal subscribe to the topic.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        existing_topic: sns.ITopic | None = None,
        period: Duration = defaults.ALARM_PERIOD,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic: sns.ITopic = existing_topic or sns.Topic(
            self, "Topic", display_name="evalstack operations", master_key=key, enforce_ssl=True
        )
        self._period = period
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []

    def _alarm(self, construct_id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def watch_queue(self, construct_id: str, queue: sqs.IQueue, what: str) -> cloudwatch.Alarm:
        metric = queue.metric_approximate_number_of_messages_visible(period=self._period, statistic="Maximum")
        return self._alarm(f"{construct_id}DeadLetters", metric, f"evalstack: {what} has dead letters (redrive them)")

    def watch_function(self, construct_id: str, function: EvaluationFunction, what: str) -> None:
        """Errors of an EvaluationFunction and messages in its dead-letter queue."""
        self._alarm(
            f"{construct_id}Errors",
            function.function.metric_errors(period=self._period, statistic="Sum"),
            f"evalstack: the {what} function failed",
        )
        self.watch_queue(construct_id, function.dead_letter_queue, f"the {what} function")

    def watch_pipeline(self, construct_id: str, pipeline_name: str) -> cloudwatch.Alarm:
        metric = cloudwatch.Metric(
            namespace=PIPELINE_METRICS_NAMESPACE,
            metric_name="ExecutionFailed",
            dimensions_map={"PipelineName": pipeline_name},
            period=self._period,
            statistic="Sum",
        )
        return self._alarm(f"{construct_id}Failed", metric, f"evalstack: an execution of {pipeline_name} failed")

    def grant_subscribe(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sns:Subscribe"], resource_arns=[self.topic.topic_arn]
        )
