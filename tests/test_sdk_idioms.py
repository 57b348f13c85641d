"""The released SDK v3's execution idioms, beside the reference's, on real executions of the local
backend (and a botocore client for what only SageMaker has)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from enum import Enum
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from evalstack.evaluate import BenchMarkEvaluator, CustomScorerEvaluator, EvaluationPipelineExecution
from evalstack.runtime.backend import Backend
from evalstack.runtime.evaluators import DryRun
from evalstack.runtime.execution import ExecutionNotFoundError, FailedStatusError, TimeoutExceededError

SERVER = "openai:http://127.0.0.1:9/v1?model=m"


class SdkEvalType(Enum):
    """The released SDK's EvalType values."""

    BENCHMARK = "benchmark"
    CUSTOM_SCORER = "customscorer"
    LLM_AS_JUDGE = "llmasjudge"


class FailingScorer:
    def score(self, predictions, ground_truth, metadata=None):
        raise ArithmeticError("the scorer broke")


class SlowScorer:
    def score(self, predictions, ground_truth, metadata=None):
        time.sleep(120)
        return {"never": 0.0}


def _dataset(tmp_path: Path, rows: int = 12) -> str:
    path = tmp_path / "answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"q{i}", "response": "yes" if i % 3 else "no", "reference": "yes"}) + "\n"
            for i in range(rows)
        )
    )
    return str(path)


@pytest.fixture
def succeeded(tmp_path: Path) -> EvaluationPipelineExecution:
    execution = CustomScorerEvaluator(evaluator="accuracy", dataset=_dataset(tmp_path), model="listed").evaluate()
    execution.wait(target_status="Succeeded", poll=5, timeout=300)
    return execution


def test_status_is_a_string_and_the_sdks_status_object(succeeded: EvaluationPipelineExecution) -> None:
    assert succeeded.status == "Succeeded"  # the reference
    assert succeeded.status.overall_status == "Succeeded"  # the released SDK
    assert succeeded.status.failure_reason is None
    steps = succeeded.status.step_details
    assert [s.name for s in steps] == ["EvaluateModel", "CheckEvaluateBaseModel", "Report"]
    assert all(s.status == "Completed" for s in steps)
    # StepDetail.job_arn: the local runner's Processing job for each Processing step, none for a condition.
    jobs = {s.name: s.job_arn for s in steps}
    assert jobs["CheckEvaluateBaseModel"] is None
    for name in ("EvaluateModel", "Report"):
        assert jobs[name].endswith(f":processing-job/pipelines-{succeeded.arn.rsplit('/', 1)[-1]}-{name}".lower())
    assert isinstance(succeeded.last_modified_time, datetime)
    assert succeeded.last_modified_time >= succeeded.creation_time


def test_get_by_arn_id_or_name_in_either_keyword(succeeded: EvaluationPipelineExecution) -> None:
    execution_id = succeeded.arn.rsplit("/", 1)[-1]
    for found in (
        EvaluationPipelineExecution.get(arn=succeeded.arn),
        EvaluationPipelineExecution.get(pipeline_execution_arn=succeeded.arn),
        EvaluationPipelineExecution.get(succeeded.arn),
        EvaluationPipelineExecution.get(execution_id),
        EvaluationPipelineExecution.get(succeeded.name),
    ):
        assert (found.arn, found.status, found.s3_output_path) == (succeeded.arn, "Succeeded", succeeded.s3_output_path)
    for unknown in ("no-such-execution", succeeded.arn[:-3] + "zzz"):
        with pytest.raises(ClientError, match="no evalstack execution has the name, id or ARN") as raised:
            EvaluationPipelineExecution.get(arn=unknown)
        assert isinstance(raised.value, ExecutionNotFoundError)
        assert raised.value.response["Error"]["Code"] == "ResourceNotFound"


def test_get_all_accepts_every_spelling_of_the_kind(succeeded: EvaluationPipelineExecution) -> None:
    for kind in ("custom_scorer", "customscorer", "custom-scorer", "CustomScorer", SdkEvalType.CUSTOM_SCORER):
        assert [e.arn for e in EvaluationPipelineExecution.get_all(kind)] == [succeeded.arn]
    for kind in ("llmasjudge", "llm-as-judge", SdkEvalType.LLM_AS_JUDGE, "benchmark"):
        assert EvaluationPipelineExecution.get_all(kind) == []
    assert len(list(EvaluationPipelineExecution.get_all())) == 1  # the SDK's iterator idiom works on the list
    with pytest.raises(ValueError, match="eval_type: must be one of"):
        EvaluationPipelineExecution.get_all("mtrl")


def test_show_results_prints_a_table_in_a_terminal(
    succeeded: EvaluationPipelineExecution, capsys: pytest.CaptureFixture[str]
) -> None:
    succeeded.show_results()
    out = capsys.readouterr().out
    accuracy = succeeded.results()["metrics"]["accuracy"]
    assert accuracy == 8 / 12
    row = next(line for line in out.splitlines() if line.startswith("accuracy "))
    assert f"{accuracy:.4f}" in row
    assert "<table" not in out


def test_show_results_displays_html_in_a_notebook(succeeded: EvaluationPipelineExecution) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    shell = InteractiveShell.instance()
    shell.config["IPKernelApp"] = Config()  # what a Jupyter kernel's shell carries
    try:
        with capture_output() as captured:
            succeeded.show_results()
    finally:
        del shell.config["IPKernelApp"]
        InteractiveShell.clear_instance()
    assert captured.stdout == ""
    html = captured.outputs[0].data["text/html"]
    assert '<td data-metric="accuracy">accuracy</td>' in html


def test_a_failed_execution_raises_in_both_styles(tmp_path: Path) -> None:
    execution = CustomScorerEvaluator(evaluator=FailingScorer(), dataset=_dataset(tmp_path), model="listed").evaluate()
    with pytest.raises(RuntimeError, match="the scorer broke") as reference_style:
        execution.wait(poll=60)
    assert isinstance(reference_style.value, FailedStatusError)
    assert reference_style.value.status == "Failed"
    with pytest.raises(FailedStatusError):
        execution.wait(target_status="Succeeded", poll=5)
    execution.wait(target_status="Failed")  # the SDK's idiom: waiting for the status it ended in
    with pytest.raises(ValueError, match=r"Cannot show results: execution .* is Failed"):
        execution.show_results()


def test_a_stopped_execution_says_so(tmp_path: Path) -> None:
    execution = CustomScorerEvaluator(evaluator=SlowScorer(), dataset=_dataset(tmp_path), model="listed").evaluate()
    with pytest.raises(TimeoutError) as timed_out:
        execution.wait(poll=1, timeout=0.2)
    assert isinstance(timed_out.value, TimeoutExceededError)
    execution.stop()
    with pytest.raises(RuntimeError) as raised:
        execution.wait(poll=5)
    assert execution.status == "Stopped"
    assert "None" not in str(raised.value)
    assert "Stopped: it was stopped (StopPipelineExecution) before it finished" in str(raised.value)


def test_step_detail_job_arn_on_sagemaker() -> None:
    """ListPipelineExecutionSteps (which moto lacks) through a stubbed botocore client, validated
    against the service model: the step's Processing job ARN comes from its Metadata."""
    client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/evalstack-benchmark/execution/abc123"
    job = "arn:aws:sagemaker:us-east-1:123456789012:processing-job/pipelines-abc123-evaluatemodel"
    stubber = Stubber(client)
    stubber.add_response(
        "list_pipeline_execution_steps",
        {
            "PipelineExecutionSteps": [
                {
                    "StepName": "EvaluateModel",
                    "StepStatus": "Succeeded",
                    "StartTime": datetime(2026, 1, 1),
                    "EndTime": datetime(2026, 1, 1, 1),
                    "Metadata": {"ProcessingJob": {"Arn": job}},
                },
                {"StepName": "Gate", "StepStatus": "Succeeded", "Metadata": {"Condition": {"Outcome": "True"}}},
            ]
        },
        {"PipelineExecutionArn": arn, "SortOrder": "Ascending"},
    )
    execution = EvaluationPipelineExecution(
        name="abc123",
        arn=arn,
        status="Succeeded",
        eval_type="benchmark",
        s3_output_path="s3://bucket/out/abc123",
        creation_time=None,
        _backend=Backend("sagemaker", client),
    )
    with stubber:
        steps = execution.status.step_details
    assert [(s.name, s.status, s.job_arn) for s in steps] == [
        ("EvaluateModel", "Completed", job),
        ("Gate", "Completed", None),
    ]


def test_subtasks_accept_a_string_a_list_or_all() -> None:
    assert BenchMarkEvaluator("MMLU", model=SERVER, subtasks="anatomy").subtasks == ["anatomy"]
    assert BenchMarkEvaluator("MMLU", model=SERVER, subtasks=["anatomy", "Astronomy"]).subtasks == [
        "anatomy",
        "Astronomy",
    ]
    assert BenchMarkEvaluator("MMLU", model=SERVER, subtasks="ALL").subtasks is None
    evaluator = BenchMarkEvaluator("MMLU", model=SERVER)
    assert evaluator.evaluate(subtask="anatomy", dry_run=True).spec["subtasks"] == ["anatomy"]
    assert evaluator.evaluate(subtask=["anatomy", "astronomy"], dry_run=True).spec["subtasks"] == [
        "anatomy",
        "astronomy",
    ]
    arc = BenchMarkEvaluator("ARC", model=SERVER, subtasks="easy")
    assert arc.evaluate(subtask="all", dry_run=True).spec["subtasks"] is None
    with pytest.raises(ValueError, match=r"subtasks: unknown MMLU subtask\(s\) \['anatomyy'\]"):
        BenchMarkEvaluator("MMLU", model=SERVER, subtasks="anatomyy")
    with pytest.raises(ValueError, match="subtask: expected a subtask name, a list of names or 'ALL'"):
        evaluator.evaluate(subtask=3)


def test_dry_run_returns_spec_and_definition_and_starts_nothing(tmp_path: Path, isolated_environment: Path) -> None:
    out = tmp_path / "results"
    evaluator = CustomScorerEvaluator(
        evaluator="f1", dataset=_dataset(tmp_path), model="listed", s3_output_path=str(out)
    )
    evaluator.hyperparameters.average = "weighted"
    dry = evaluator.evaluate(dry_run=True)
    assert isinstance(dry, DryRun)
    assert dry.spec["metrics"] == ["f1"] and dry.spec["hyperparameters"]["average"] == "weighted"
    assert dry.eval_type == "custom_scorer"
    assert [s["Name"] for s in dry.pipeline_definition["Steps"]][:1] == ["EvaluateModel"]
    assert not out.exists()
    assert EvaluationPipelineExecution.get_all() == []


def test_an_unknown_name_fails_in_the_constructor() -> None:
    # Names are looked up (tests/test_model_resolution.py); with no credentials here, each lookup says so.
    message = "model: 'my-fine-tuned-model' is a bare name, so evalstack looked it up in region us-east-1, in order: "
    with pytest.raises(ValueError, match=message + "endpoint 'my-fine-tuned-model': lookup failed"):
        BenchMarkEvaluator("MMLU", model="my-fine-tuned-model")
