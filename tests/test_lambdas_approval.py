"""Model approval gate against moto in server mode (SageMaker pipelines and model packages, S3, SNS
delivering to SQS), driven by real "Pipeline Execution Status Change" events."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import boto3
import pytest
from botocore.exceptions import ClientError

from evalstack.lambdas import approval
from evalstack.lambdas.spec import build_spec, spec_json
from evalstack.pipeline.definition import build_definition
from tests.support.eventbridge import pipeline_execution_status_change

ROLE = "arn:aws:iam::123456789012:role/evalstack-sagemaker"


@dataclass
class Evaluation:
    pipeline_arn: str
    execution_arn: str
    package_arn: str
    bucket: str
    queue_url: str

    def write_report(self, results: dict, comparison: dict | None, execution_arn: str | None = None) -> None:
        s3 = boto3.client("s3")
        prefix = f"evaluations/run/{(execution_arn or self.execution_arn).rsplit('/', 1)[-1]}"
        s3.put_object(Bucket=self.bucket, Key=f"{prefix}/results.json", Body=json.dumps(results).encode())
        if comparison is not None:
            s3.put_object(Bucket=self.bucket, Key=f"{prefix}/comparison.json", Body=json.dumps(comparison).encode())

    def notifications(self) -> list[dict]:
        sqs = boto3.client("sqs")
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [json.loads(json.loads(m["Body"])["Message"]) for m in messages.get("Messages", [])]

    def package(self) -> dict:
        return boto3.client("sagemaker").describe_model_package(ModelPackageName=self.package_arn)

    def event(self, status: str = "Succeeded", event_id: str = "ev-1", **kwargs: str) -> dict:
        execution_arn = kwargs.pop("execution_arn", self.execution_arn)
        return pipeline_execution_status_change(self.pipeline_arn, execution_arn, status, event_id, **kwargs)

    def start_again(self) -> str:
        """Another execution of the pipeline on the same spec (a re-evaluation of the same package)."""
        sm = boto3.client("sagemaker")
        return sm.start_pipeline_execution(
            PipelineName=self.pipeline_arn.rsplit("/", 1)[-1],
            PipelineParameters=_parameters(self.bucket),
            ClientRequestToken=uuid.uuid4().hex,
        )["PipelineExecutionArn"]


def _parameters(bucket: str) -> list[dict[str, str]]:
    return [
        {"Name": "SpecUri", "Value": f"s3://{bucket}/evaluations/run/spec.json"},
        {"Name": "OutputPath", "Value": f"s3://{bucket}/evaluations/run"},
        {"Name": "EvaluateBaseModel", "Value": "true"},
    ]


@pytest.fixture
def evaluation(aws: str, monkeypatch: pytest.MonkeyPatch) -> Evaluation:
    suffix = uuid.uuid4().hex[:10]
    s3, sm, sns, sqs = (boto3.client(n) for n in ("s3", "sagemaker", "sns", "sqs"))
    bucket, group = f"evalstack-{suffix}", f"models-{suffix}"
    s3.create_bucket(Bucket=bucket)
    pipeline_arn = sm.create_pipeline(
        PipelineName=f"evalstack-test-{suffix}",
        PipelineDefinition=json.dumps(build_definition("benchmark", role_arn=ROLE)),
        RoleArn=ROLE,
    )["PipelineArn"]
    sm.create_model_package_group(ModelPackageGroupName=group)
    package_arn = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    spec = build_spec(
        {"eval_type": "benchmark", "benchmark": "MMLU", "evaluate_base_model": True},
        model=package_arn, base_model=None, model_package_group=group, kms_key_id=None,
    )  # fmt: skip
    s3.put_object(Bucket=bucket, Key="evaluations/run/spec.json", Body=spec_json(spec).encode())
    execution_arn = sm.start_pipeline_execution(
        PipelineName=f"evalstack-test-{suffix}",
        PipelineParameters=_parameters(bucket),
        ClientRequestToken=uuid.uuid4().hex,
    )["PipelineExecutionArn"]
    topic_arn = sns.create_topic(Name=f"approvals-{suffix}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"approvals-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    for name, value in {
        "TOPIC_ARN": topic_arn,
        "METRIC": "accuracy",
        "MIN_SCORE": "0.6",
        "MIN_IMPROVEMENT": "0.0",
    }.items():
        monkeypatch.setenv(name, value)
    return Evaluation(pipeline_arn, execution_arn, package_arn, bucket, queue_url)


def test_passing_report_approves_once(evaluation: Evaluation) -> None:
    evaluation.write_report(
        {"metrics": {"accuracy": 0.72}},
        {"base": {"accuracy": 0.65}, "improvement": {"accuracy": 0.07},
         "significance": {"accuracy": {"p_value": 0.03, "significant": True, "regressed": False}}},
    )  # fmt: skip

    result = approval.handler(evaluation.event())

    assert (result["status"], result["reasons"]) == ("Approved", [])
    package = evaluation.package()
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ApprovalDescription"] == (
        f"evalstack {evaluation.execution_arn} started 2026-11-28T12:00:05Z: all thresholds met for accuracy"
    )
    (message,) = evaluation.notifications()
    assert message == {
        "decision": "Approved",
        "execution_status": "Succeeded",
        "metrics": {"accuracy": 0.72},
        "model_package_arn": evaluation.package_arn,
        "pipeline_execution_arn": evaluation.execution_arn,
        "reasons": [],
    }

    # EventBridge may deliver the same event again: nothing changes and nothing is published.
    assert approval.handler(evaluation.event(event_id="ev-1-again"))["status"] == "duplicate"
    assert evaluation.notifications() == []


def test_significant_regression_rejects(evaluation: Evaluation) -> None:
    evaluation.write_report(
        {"metrics": {"accuracy": 0.61, "f1": 0.4}},
        {"base": {"accuracy": 0.60, "f1": 0.5}, "improvement": {"accuracy": 0.01, "f1": -0.1},
         "significance": {"f1": {"p_value": 0.004, "significant": True, "regressed": True}}},
    )  # fmt: skip

    result = approval.handler(evaluation.event())

    assert result["status"] == "Rejected"
    assert result["reasons"] == ["f1 regressed significantly (-0.1000, p=0.004)"]
    assert evaluation.package()["ModelApprovalStatus"] == "Rejected"
    assert [m["decision"] for m in evaluation.notifications()] == ["Rejected"]


def test_failed_execution_leaves_package_pending_and_notifies(evaluation: Evaluation) -> None:
    result = approval.handler(evaluation.event(status="Failed"))

    assert result["status"] == "not-evaluated"
    assert evaluation.package()["ModelApprovalStatus"] == "PendingManualApproval"
    (message,) = evaluation.notifications()
    assert (message["decision"], message["execution_status"]) == ("none", "Failed")


def test_missing_results_of_a_succeeded_execution_is_an_error(evaluation: Evaluation) -> None:
    with pytest.raises(FileNotFoundError, match=r"results.json: the succeeded execution wrote no results"):
        approval.handler(evaluation.event())
    assert evaluation.package()["ModelApprovalStatus"] == "PendingManualApproval"


@pytest.mark.parametrize(
    ("results", "comparison", "reasons"),
    [
        ({"metrics": {"accuracy": 0.5}}, {"improvement": {"accuracy": 0.02}},
         ["accuracy 0.5000 is below the minimum score 0.6000"]),
        ({"metrics": {"accuracy": 0.7}}, {"improvement": {"accuracy": -0.02}},
         ["accuracy improved by -0.0200, less than the minimum +0.0000"]),
        ({"metrics": {"accuracy": 0.7}}, None, ["no comparison with the base model for accuracy"]),
        ({"metrics": {"f1": 0.7}}, None,
         ["metric 'accuracy' is missing from results.json (has ['f1'])",
          "no comparison with the base model for accuracy"]),
    ],
)  # fmt: skip
def test_decide_names_every_failed_threshold(results: dict, comparison: dict | None, reasons: list[str]) -> None:
    thresholds = approval.Thresholds(metric="accuracy", min_score=0.6, min_improvement=0.0)
    decision = approval.decide(results, comparison, thresholds)
    assert (decision.approved, decision.reasons) == (False, reasons)


@pytest.mark.parametrize(
    ("results", "comparison", "reasons"),
    [
        # Direction from comparison.json (the judge's compare()): toxicity rose and is over the maximum.
        ({"metrics": {"toxicity": 0.3}}, {"improvement": {"toxicity": 0.05}, "higher_is_better": {"toxicity": False}},
         ["toxicity 0.3000 is above the maximum score 0.2000 (lower is better)",
          "toxicity improved by -0.0500, less than the minimum +0.0000 (lower is better)"]),
        ({"metrics": {"toxicity": 0.1}}, {"improvement": {"toxicity": -0.05}, "higher_is_better": {"toxicity": False}},
         []),
        # No base run: the direction comes from the judge's per-metric details in results.json.
        ({"metrics": {"toxicity": 0.1}, "details": {"per_metric": {"toxicity": {"higher_is_better": False}}}},
         None, []),
        ({"metrics": {"toxicity": 0.25}, "details": {"per_metric": {"toxicity": {"higher_is_better": False}}}},
         None, ["toxicity 0.2500 is above the maximum score 0.2000 (lower is better)"]),
    ],
)  # fmt: skip
def test_decide_lower_is_better_metric(results: dict, comparison: dict | None, reasons: list[str]) -> None:
    thresholds = approval.Thresholds(
        metric="toxicity", min_score=0.2, min_improvement=None if comparison is None else 0.0
    )
    decision = approval.decide(results, comparison, thresholds)
    assert (decision.approved, decision.reasons) == (not reasons, reasons)


@pytest.mark.parametrize(
    ("comparison", "reasons"),
    [
        # Corpus BLEU fell a little while the paired per-sample test says significantly better: no regression.
        ({"improvement": {"bleu": -0.002}, "significance": {"bleu": {"p_value": 0.01, "significant": True,
                                                                     "regressed": False}}}, []),
        ({"improvement": {"bleu": 0.002}, "significance": {"bleu": {"p_value": 0.01, "significant": True,
                                                                    "regressed": True}}},
         ["bleu regressed significantly (+0.0020, p=0.01)"]),
        # Lower is better: a significant rise is the regression.
        ({"improvement": {"toxicity": 0.04}, "higher_is_better": {"toxicity": False},
          "significance": {"toxicity": {"p_value": 0.02, "significant": True, "regressed": False}}},
         ["toxicity regressed significantly (+0.0400, p=0.02)"]),
        ({"improvement": {"toxicity": -0.04}, "higher_is_better": {"toxicity": False},
          "significance": {"toxicity": {"p_value": 0.02, "significant": True, "regressed": True}}}, []),
    ],
)  # fmt: skip
def test_significant_regression_takes_its_direction_from_the_test(comparison: dict, reasons: list[str]) -> None:
    thresholds = approval.Thresholds(metric="accuracy")
    decision = approval.decide({"metrics": {"accuracy": 0.7}}, comparison, thresholds)
    assert (decision.approved, decision.reasons) == (not reasons, reasons)


def test_failed_publish_is_retried_before_the_decision_is_recorded(evaluation: Evaluation) -> None:
    evaluation.write_report({"metrics": {"accuracy": 0.72}}, {"improvement": {"accuracy": 0.07}})
    missing_topic = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    clients = {n: boto3.client(n) for n in ("sagemaker", "s3", "sns")}

    with pytest.raises(ClientError, match="NotFound"):
        approval.judge(evaluation.event(), approval.Thresholds.from_env(), missing_topic,
                       sm=clients["sagemaker"], s3=clients["s3"], sns=clients["sns"])  # fmt: skip
    assert evaluation.package()["ModelApprovalStatus"] == "PendingManualApproval"

    # Lambda retries the event: this time the notification goes out and the decision is recorded.
    assert approval.handler(evaluation.event(event_id="ev-1-retry"))["status"] == "Approved"
    assert evaluation.package()["ModelApprovalStatus"] == "Approved"
    assert [m["decision"] for m in evaluation.notifications()] == ["Approved"]


def test_late_event_of_an_older_execution_keeps_the_newer_decision(evaluation: Evaluation) -> None:
    older, newer = evaluation.execution_arn, evaluation.start_again()
    evaluation.write_report({"metrics": {"accuracy": 0.9}}, {"improvement": {"accuracy": 0.2}}, execution_arn=older)
    evaluation.write_report({"metrics": {"accuracy": 0.5}}, {"improvement": {"accuracy": -0.1}}, execution_arn=newer)

    decided = approval.handler(evaluation.event(execution_arn=newer, event_id="ev-2", started="2026-11-29T12:00:05Z"))
    late = approval.handler(evaluation.event(execution_arn=older, event_id="ev-1", started="2026-11-28T12:00:05Z"))

    assert (decided["status"], late["status"]) == ("Rejected", "superseded")
    package = evaluation.package()
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ApprovalDescription"].startswith(f"evalstack {newer} started 2026-11-29T12:00:05Z: ")
    assert [m["pipeline_execution_arn"] for m in evaluation.notifications()] == [newer]
