"""The command's contract: exit codes (0 ok, 1 failed or stopped, 2 usage, 3 not found), executions
named by name, id or ARN, both spellings of every name, and one-line errors (--debug shows the
traceback). Run as a user runs it: a subprocess of the installed entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalstack.evaluate import CustomScorerEvaluator, EvaluationPipelineExecution
from tests.test_cli import evalstack


class FailingScorer:
    def score(self, predictions, ground_truth, metadata=None):
        raise ArithmeticError("the scorer broke")


def _dataset(tmp_path: Path) -> str:
    path = tmp_path / "answers.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "response": "a", "reference": "a"}) + "\n" for i in range(12))
    )
    return str(path)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("evalstack: error: ")
    return lines[0]


@pytest.fixture
def succeeded(tmp_path: Path) -> EvaluationPipelineExecution:
    execution = CustomScorerEvaluator(evaluator="accuracy", dataset=_dataset(tmp_path), model="listed").evaluate()
    execution.wait()
    return execution


@pytest.fixture
def failed(tmp_path: Path) -> EvaluationPipelineExecution:
    execution = CustomScorerEvaluator(evaluator=FailingScorer(), dataset=_dataset(tmp_path), model="listed").evaluate()
    with pytest.raises(RuntimeError):
        execution.wait()
    return execution


def test_show_accepts_name_id_or_arn(succeeded: EvaluationPipelineExecution) -> None:
    for reference in (succeeded.arn, succeeded.arn.rsplit("/", 1)[-1], succeeded.name):
        out = evalstack("executions", "show", reference)
        assert out.returncode == 0, out.stderr
        assert f"ARN:       {succeeded.arn}" in out.stdout
        assert "Status:    Succeeded" in out.stdout


def test_not_found_exits_3_in_one_line(succeeded: EvaluationPipelineExecution) -> None:
    unknown_arn = succeeded.arn[:-4] + "zzzz"
    for command in ("show", "wait", "stop", "retry"):
        for reference in ("no-such-execution", unknown_arn):
            out = evalstack("executions", command, reference)
            assert out.returncode == 3, (command, reference, out.stderr)
            line = _one_line_error(out.stderr)
            assert f"no evalstack execution has the name, id or ARN {reference!r}" in line
            assert "evalstack executions list" in line


def test_a_failed_execution_exits_1_and_says_why(failed: EvaluationPipelineExecution) -> None:
    out = evalstack("executions", "wait", failed.name)
    assert out.returncode == 1
    line = _one_line_error(out.stderr)
    assert "Failed" in line and "the scorer broke" in line


def test_stopping_a_finished_execution_is_a_usage_error(succeeded: EvaluationPipelineExecution) -> None:
    out = evalstack("executions", "stop", succeeded.arn)
    assert out.returncode == 2
    assert "is Succeeded; only an executing one can be stopped" in _one_line_error(out.stderr)
    out = evalstack("executions", "retry", succeeded.arn)
    assert out.returncode == 2
    assert "only a failed or stopped one can be retried" in _one_line_error(out.stderr)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert evalstack("evaluate", "benchmark", "mmlu").returncode == 2  # argparse: --model missing
    out = evalstack("evaluate", "benchmark", "mmlu", "--model", "my-model", "--output", str(tmp_path / "o"))
    assert out.returncode == 2
    assert "is a bare name" in _one_line_error(out.stderr)  # the accepted forms, on the same line
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback() -> None:
    out = evalstack("executions", "show", "no-such-execution", "--debug")
    assert out.returncode == 3
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.rstrip().splitlines()[-1].startswith("evalstack: error: ")


def test_hyphens_and_underscores_everywhere(tmp_path: Path) -> None:
    for kind in ("custom-scorer", "custom_scorer", "customscorer"):
        out = evalstack("hyperparameters", kind)
        assert out.returncode == 0, out.stderr
        assert "average" in out.stdout
    data = _dataset(tmp_path)
    for command, option in (("custom-scorer", "--dry-run"), ("custom_scorer", "--dry_run")):
        out = evalstack("evaluate", command, "--dataset", data, "--metric", "accuracy", "--model", "m", option)
        assert out.returncode == 0, out.stderr
        printed = json.loads(out.stdout)
        assert printed["spec"]["metrics"] == ["accuracy"]
        assert printed["pipeline_definition"]["Steps"][0]["Name"] == "EvaluateModel"
    out = evalstack(
        "evaluate", "llm_as_judge", "--dataset", data, "--evaluator_model", "openai:http://127.0.0.1:9/v1?model=j",
        "--builtin-metric", "helpfulness", "--model", "m", "--dry-run",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"]["judge"]["evaluator_model"] == "openai:http://127.0.0.1:9/v1?model=j"


def test_custom_judge_metrics_from_a_json_file(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        json.dumps([{"name": "tone", "description": "Polite tone", "prompt_template": "Rate {response}. Rating:"}])
    )
    args = ["evaluate", "judge", "--dataset", _dataset(tmp_path), "--judge", "openai:http://127.0.0.1:9/v1?model=j"]
    out = evalstack(*args, "--custom-metrics", str(metrics), "--model", "m", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert [m["name"] for m in json.loads(out.stdout)["spec"]["judge"]["custom_metrics"]] == ["tone"]
    out = evalstack(*args, "--custom-metrics", str(tmp_path / "nope.json"), "--model", "m", "--dry-run")
    assert out.returncode == 3
    assert "nope.json" in _one_line_error(out.stderr)
