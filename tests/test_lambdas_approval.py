"""Model approval gate against moto in server mode (SageMaker pipelines and model packages, S3, SNS
delivering to SQS), driven by real "Pipeline Execution Status Change" events of executions that the
trigger started (so the markers are the trigger's own), and of executions someone else started."""

from __future__ import annotations

import dataclasses
import json
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from evalstack.lambdas import approval, trigger
from evalstack.lambdas.spec import build_spec, spec_json
from tests.support.eventbridge import scheduler_invocation
from tests.support.lambda_platform import PASSING, PASSING_COMPARISON, TEMPLATE, Platform

PENDING = "PendingManualApproval"


@pytest.fixture
def platform(aws: str, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return Platform.create(monkeypatch)


def _report_uri(started: dict) -> str:
    return f"{started['output_path']}/{started['pipeline_execution_arn'].rsplit('/', 1)[-1]}/report.html"


def test_passing_report_approves_once(platform: Platform) -> None:
    # An Approved package is the base, so the execution compares and writes comparison.json.
    _base, package = platform.packages("Approved", PENDING)
    started = platform.evaluate(package)
    platform.write_report(
        started,
        {"metrics": {"accuracy": 0.72, "f1": 0.7}},
        {"base": {"accuracy": 0.65}, "improvements": {"accuracy": 0.07},
         "significance": {"accuracy": {"p_value": 0.03, "significant": True, "regressed": False}}},
    )  # fmt: skip
    execution = started["pipeline_execution_arn"]

    result = approval.handler(platform.gate_event(execution))

    assert (result["status"], result["reasons"]) == ("Approved", [])
    described = platform.package(package)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == (
        f"evalstack {execution} started 2026-11-28T12:00:05Z: all thresholds met for accuracy"
    )
    (message,) = platform.notifications()
    assert message == {
        "decision": "Approved",
        "outcome": "decided",
        "execution_status": "Succeeded",
        "headline": {
            "metric": "accuracy",
            "score": 0.72,
            "base_score": 0.65,
            "improvement": 0.07,
            "metrics": {"accuracy": 0.72, "f1": 0.7},
        },
        "model_package_arn": package,
        "pipeline_execution_arn": execution,
        "reasons": [],
        "report_uri": _report_uri(started),
    }

    # EventBridge may deliver the same event again: nothing changes and nothing is published.
    assert approval.handler(platform.gate_event(execution, event_id="ev-1-again"))["status"] == "duplicate"
    assert platform.notifications() == []


def test_significant_regression_rejects(platform: Platform) -> None:
    # An Approved package is the base, so the execution compares and writes comparison.json.
    _base, package = platform.packages("Approved", PENDING)
    started = platform.evaluate(package)
    platform.write_report(
        started,
        {"metrics": {"accuracy": 0.61, "f1": 0.4}},
        {"base": {"accuracy": 0.60, "f1": 0.5}, "improvements": {"accuracy": 0.01, "f1": -0.1},
         "significance": {"f1": {"p_value": 0.004, "significant": True, "regressed": True}}},
    )  # fmt: skip

    result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "Rejected"
    assert result["reasons"] == ["f1 regressed significantly (-0.1000, p=0.004)"]
    assert platform.package(package)["ModelApprovalStatus"] == "Rejected"
    (message,) = platform.notifications()
    assert (message["decision"], message["reasons"]) == ("Rejected", result["reasons"])
    assert message["headline"]["score"] == 0.61
    assert message["report_uri"] == _report_uri(started)


def test_start_by_a_principal_outside_the_platform_leaves_the_package_untouched(platform: Platform) -> None:
    """A CI role with start rights runs the pipeline on its own spec (BoolQ, 5 samples) for the package."""
    (package,) = platform.packages(PENDING)
    own = build_spec({"eval_type": "benchmark", "benchmark": "BoolQ", "hyperparameters": {"max_samples": 5}},
                     model=package, base_model=None, model_package_group=platform.group, kms_key_id=None)  # fmt: skip
    prefix = f"s3://{platform.bucket}/evaluations/{platform.pipeline}/outsider"
    platform.write(f"{prefix}/spec.json", spec_json(own).encode())
    sm = boto3.client("sagemaker")
    execution = sm.start_pipeline_execution(
        PipelineName=platform.pipeline,
        PipelineParameters=[{"Name": "SpecUri", "Value": f"{prefix}/spec.json"},
                            {"Name": "OutputPath", "Value": prefix},
                            {"Name": "EvaluateBaseModel", "Value": "false"}],
        ClientRequestToken=uuid.uuid4().hex,
    )["PipelineExecutionArn"]  # fmt: skip
    platform.write_report({"output_path": prefix, "pipeline_execution_arn": execution}, {"metrics": {"accuracy": 0.99}})

    result = approval.handler(platform.gate_event(execution))

    assert result["status"] == "unverifiable"
    described = platform.package(package)
    assert described["ModelApprovalStatus"] == PENDING
    assert "ApprovalDescription" not in described
    (message,) = platform.notifications()
    execution_id = execution.rsplit("/", 1)[-1]
    assert message == {
        "decision": "none",
        "outcome": "unverifiable",
        "execution_status": "Succeeded",
        "model_package_arn": None,
        "pipeline_execution_arn": execution,
        "reasons": [
            f"no marker at {platform.control_uri}/markers/executions/{execution_id}.json: "
            "the execution was not started by this platform's trigger"
        ],
    }


def test_outsider_pointing_at_the_platforms_own_spec_is_still_unverifiable(platform: Platform) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)
    sm = boto3.client("sagemaker")
    params = [{"Name": k, "Value": v} for k, v in platform.parameters(started["pipeline_execution_arn"]).items()]
    copy = sm.start_pipeline_execution(
        PipelineName=platform.pipeline, PipelineParameters=params, ClientRequestToken=uuid.uuid4().hex
    )["PipelineExecutionArn"]
    platform.write_report({**started, "pipeline_execution_arn": copy}, PASSING, PASSING_COMPARISON)

    assert approval.handler(platform.gate_event(copy))["status"] == "unverifiable"
    assert platform.package(package)["ModelApprovalStatus"] == PENDING


def test_package_a_person_approved_during_the_run_is_never_regated(platform: Platform) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)
    platform.approve_by_hand(package)
    platform.write_report(started, {"metrics": {"accuracy": 0.1}}, {"improvements": {"accuracy": -0.5}})

    result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "not-gated"
    described = platform.package(package)
    assert (described["ModelApprovalStatus"], described["ApprovalDescription"]) == ("Approved", "approved by a person")
    (message,) = platform.notifications()
    assert (message["decision"], message["outcome"]) == ("none", "not-gated")
    assert message["reasons"] == [
        f"the package is Approved in {platform.group}; the gate decides only ['PendingManualApproval'] packages "
        f"of {platform.group} and leaves it as is"
    ]


def test_scheduled_reevaluation_of_an_approved_package_is_reported_not_applied(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A team that opts its schedule into Approved packages still gets no status change from the gate.
    monkeypatch.setenv("CANDIDATE_STATUSES", "Approved,PendingManualApproval")
    (package,) = platform.packages("Approved")
    started = trigger.handler(scheduler_invocation("nightly", "2026-11-28T02:00:00Z"))
    platform.write_report(started, {"metrics": {"accuracy": 0.1}})

    assert approval.handler(platform.gate_event(started["pipeline_execution_arn"]))["status"] == "not-gated"
    assert platform.package(package)["ModelApprovalStatus"] == "Approved"


def test_gate_for_another_evaluation_refuses_the_marker(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)
    platform.write_report(started, PASSING, PASSING_COMPARISON)
    monkeypatch.setenv("SPEC_TEMPLATE", json.dumps({**TEMPLATE, "benchmark": "boolq"}))

    result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "unverifiable"
    assert result["reasons"][0].startswith("marker template_sha256 is ")
    assert platform.package(package)["ModelApprovalStatus"] == PENDING


def test_failed_execution_leaves_package_pending_and_notifies(platform: Platform) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)

    result = approval.handler(platform.gate_event(started["pipeline_execution_arn"], status="Failed"))

    assert result["status"] == "not-evaluated"
    assert platform.package(package)["ModelApprovalStatus"] == PENDING
    (message,) = platform.notifications()
    assert (message["decision"], message["execution_status"]) == ("none", "Failed")
    assert message["reasons"] == ["the evaluation failed; the package stays PendingManualApproval"]
    assert message["report_uri"] == _report_uri(started)


def test_missing_results_of_a_succeeded_execution_leave_the_package_pending(platform: Platform) -> None:
    (package,) = platform.packages(PENDING)
    started = platform.evaluate(package)

    result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "undecided"
    results_uri = _report_uri(started).replace("report.html", "results.json")
    assert result["reasons"] == [f"{results_uri}: the succeeded execution wrote no results"]
    assert platform.package(package)["ModelApprovalStatus"] == PENDING
    assert [m["outcome"] for m in platform.notifications()] == ["undecided"]


@pytest.mark.parametrize(
    ("results", "comparison", "reasons"),
    [
        ({"metrics": {"accuracy": 0.5}}, {"improvements": {"accuracy": 0.02}},
         ["accuracy 0.5000 is below the minimum score 0.6000"]),
        ({"metrics": {"accuracy": 0.7}}, {"improvements": {"accuracy": -0.02}},
         ["accuracy improved by -0.0200, less than the minimum +0.0000"]),
        ({"metrics": {"accuracy": 0.7}}, None, ["no comparison with the base model for accuracy"]),
    ],
)  # fmt: skip
def test_decide_names_every_failed_threshold(results: dict, comparison: dict | None, reasons: list[str]) -> None:
    thresholds = approval.Thresholds(metric="accuracy", min_score=0.6, min_improvement=0.0)
    decision = approval.decide(results, comparison, thresholds)
    assert (decision.status, decision.reasons) == ("Rejected", reasons)


@pytest.mark.parametrize(
    ("results", "comparison", "reasons"),
    [
        ({"metrics": {"f1": 0.7}}, None, ["metric 'accuracy' is missing from results.json (has ['f1'])"]),
        ({"metrics": {"accuracy": float("nan")}}, None,
         ["metric 'accuracy' is nan in results.json, not a finite number"]),
        ({"metrics": {"accuracy": float("inf")}}, None,
         ["metric 'accuracy' is inf in results.json, not a finite number"]),
        ({"metrics": {"accuracy": "0.9"}}, None, ["metric 'accuracy' is '0.9' in results.json, not a finite number"]),
        ({"metrics": {"accuracy": True}}, None, ["metric 'accuracy' is True in results.json, not a finite number"]),
        ({"metrics": [0.9]}, None, ["results.json: 'metrics' is [0.9], not an object"]),
        ({"metrics": {"accuracy": 0.9}}, {"improvements": {"accuracy": float("nan")}},
         ["improvement of 'accuracy' is nan in comparison.json, not a finite number"]),
        ({"metrics": {"accuracy": 0.9}}, {"improvements": [0.1]},
         ["comparison.json: 'improvements' is [0.1], not an object"]),
        ({"metrics": {"accuracy": 0.9}}, {"improvements": {"accuracy": 0.1}, "significance": {"f1": "yes"}},
         ["comparison.json: significance of 'f1' is 'yes', not a paired test"]),
    ],
)  # fmt: skip
def test_results_that_cannot_be_judged_never_approve(
    results: dict, comparison: dict | None, reasons: list[str]
) -> None:
    thresholds = approval.Thresholds(metric="accuracy", min_score=0.6, min_improvement=0.0)
    decision = approval.decide(results, comparison, thresholds)
    assert (decision.status, decision.reasons) == ("none", reasons)


@pytest.mark.parametrize(
    ("results", "comparison", "reasons"),
    [
        # Direction from comparison.json (the judge's compare()): toxicity rose and is over the maximum.
        ({"metrics": {"toxicity": 0.3}}, {"improvements": {"toxicity": 0.05}, "higher_is_better": {"toxicity": False}},
         ["toxicity 0.3000 is above the maximum score 0.2000 (lower is better)",
          "toxicity improved by -0.0500, less than the minimum +0.0000 (lower is better)"]),
        ({"metrics": {"toxicity": 0.1}}, {"improvements": {"toxicity": -0.05}, "higher_is_better": {"toxicity": False}},
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
    assert (decision.status, decision.reasons) == ("Rejected" if reasons else "Approved", reasons)


@pytest.mark.parametrize(
    ("comparison", "reasons"),
    [
        # Corpus BLEU fell a little while the paired per-sample test says significantly better: no regression.
        ({"improvements": {"bleu": -0.002}, "significance": {"bleu": {"p_value": 0.01, "significant": True,
                                                                     "regressed": False}}}, []),
        ({"improvements": {"bleu": 0.002}, "significance": {"bleu": {"p_value": 0.01, "significant": True,
                                                                    "regressed": True}}},
         ["bleu regressed significantly (+0.0020, p=0.01)"]),
        # Lower is better: a significant rise is the regression.
        ({"improvements": {"toxicity": 0.04}, "higher_is_better": {"toxicity": False},
          "significance": {"toxicity": {"p_value": 0.02, "significant": True, "regressed": False}}},
         ["toxicity regressed significantly (+0.0400, p=0.02)"]),
        ({"improvements": {"toxicity": -0.04}, "higher_is_better": {"toxicity": False},
          "significance": {"toxicity": {"p_value": 0.02, "significant": True, "regressed": True}}}, []),
    ],
)  # fmt: skip
def test_significant_regression_takes_its_direction_from_the_test(comparison: dict, reasons: list[str]) -> None:
    thresholds = approval.Thresholds(metric="accuracy")
    decision = approval.decide({"metrics": {"accuracy": 0.7}}, comparison, thresholds)
    assert (decision.status, decision.reasons) == ("Rejected" if reasons else "Approved", reasons)


def test_failed_publish_is_retried_before_the_decision_is_recorded(platform: Platform) -> None:
    # An Approved package is the base, so the execution compares and writes comparison.json.
    _base, package = platform.packages("Approved", PENDING)
    started = platform.evaluate(package)
    platform.write_report(started, PASSING, PASSING_COMPARISON)
    event = platform.gate_event(started["pipeline_execution_arn"])
    config = dataclasses.replace(
        approval.GateConfig.from_env(), topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic"
    )
    clients = {n: boto3.client(n) for n in ("sagemaker", "s3", "sns")}

    with pytest.raises(ClientError, match="NotFound"):
        approval.judge(event, config, sm=clients["sagemaker"], s3=clients["s3"], sns=clients["sns"])
    assert platform.package(package)["ModelApprovalStatus"] == PENDING

    # Lambda retries the event: this time the notification goes out and the decision is recorded.
    assert approval.handler({**event, "id": "ev-1-retry"})["status"] == "Approved"
    assert platform.package(package)["ModelApprovalStatus"] == "Approved"
    assert [m["decision"] for m in platform.notifications()] == ["Approved"]


def test_late_event_of_an_older_execution_keeps_the_newer_decision(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    (package,) = platform.packages(PENDING)
    older = platform.evaluate(package)
    # Re-evaluation of the same package by the next night's schedule.
    newer = trigger.handler(scheduler_invocation("nightly", "2026-11-29T02:00:00Z"))
    assert newer["model_package_arn"] == package
    platform.write_report(older, {"metrics": {"accuracy": 0.9}}, {"improvements": {"accuracy": 0.2}})
    platform.write_report(newer, {"metrics": {"accuracy": 0.5}}, {"improvements": {"accuracy": -0.1}})
    monkeypatch.setenv("GATED_STATUSES", "PendingManualApproval,Rejected")

    decided = approval.handler(platform.gate_event(newer["pipeline_execution_arn"], event_id="ev-2",
                                                   started="2026-11-29T12:00:05Z"))  # fmt: skip
    late = approval.handler(platform.gate_event(older["pipeline_execution_arn"], event_id="ev-1",
                                                started="2026-11-28T12:00:05Z"))  # fmt: skip

    assert (decided["status"], late["status"]) == ("Rejected", "superseded")
    described = platform.package(package)
    assert described["ModelApprovalStatus"] == "Rejected"
    recorded = f"evalstack {newer['pipeline_execution_arn']} started 2026-11-29T12:00:05Z: "
    assert described["ApprovalDescription"].startswith(recorded)
    assert [m["pipeline_execution_arn"] for m in platform.notifications()] == [newer["pipeline_execution_arn"]]


def test_headline_keeps_the_notification_strict_json_and_small() -> None:
    metrics = {f"m{i:02d}": i / 100 for i in range(60)} | {"accuracy": float("nan"), "bleu": float("inf")}
    numbers = approval.headline(
        {"metrics": metrics}, {"base": {"accuracy": "0.5"}, "improvements": {"accuracy": None}}, "accuracy"
    )

    assert (numbers["score"], numbers["base_score"], numbers["improvement"]) == ("nan", "'0.5'", None)
    assert list(numbers["metrics"]) == [f"m{i:02d}" for i in range(50)]
    json.dumps(numbers, allow_nan=False)  # raises on a NaN or infinity that slipped through


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_threshold_in_the_environment_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRIC", "accuracy")
    monkeypatch.setenv("MIN_SCORE", value)
    with pytest.raises(ValueError, match=rf"environment variable MIN_SCORE: expected a finite number, got '{value}'"):
        approval.Thresholds.from_env()
