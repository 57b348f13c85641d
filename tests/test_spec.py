"""EvaluationSpec: round trip, and errors that name the field (and the file and line)."""

from __future__ import annotations

import json

import pytest

from evalstack.spec import CustomJudgeMetric, DatasetSpec, EvaluationSpec, JudgeSpec, SpecError


def _benchmark(**overrides) -> EvaluationSpec:
    return EvaluationSpec(
        eval_type="benchmark",
        model="openai:http://127.0.0.1:1/v1?model=m",
        benchmark="mmlu",
        subtasks=["Anatomy"],
        **overrides,
    )


def test_round_trip_normalises_names() -> None:
    spec = _benchmark().validate()
    assert spec.benchmark == "MMLU" and spec.subtasks == ["anatomy"]
    again = EvaluationSpec.from_json(spec.to_json())
    assert again == spec
    judge = EvaluationSpec(
        eval_type="llm_as_judge", model="m", dataset=DatasetSpec("d.jsonl"),
        judge=JudgeSpec("bedrock:anthropic.claude-3-haiku-20240307-v1:0", ["Helpfulness"],
                        [CustomJudgeMetric("tone", "polite?", "Rate {response}", (1, 3))]),
    ).validate()  # fmt: skip
    assert judge.judge.builtin_metrics == ["helpfulness"]
    assert EvaluationSpec.from_json(judge.to_json()) == judge


def test_json_syntax_error_names_file_and_line() -> None:
    text = '{\n  "eval_type": "benchmark",\n  "model": "m",,\n}'
    with pytest.raises(SpecError, match=r"^s3://b/spec.json: line 3: invalid JSON"):
        EvaluationSpec.from_json(text, "s3://b/spec.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version: unsupported spec version 2"),
        ({"eval_type": "rlhf"}, "eval_type: must be one of"),
        ({"model": " "}, "model: a model reference is required"),
        ({"benchmark": "MMLU-Pro"}, "benchmark: Unknown benchmark 'MMLU-Pro'"),
        (
            {"subtasks": ["anatomy", "cooking"]},
            r"subtasks: unknown MMLU subtask\(s\) \['cooking'\]. Valid subtasks: abstract_algebra",
        ),
        ({"hyperparameters": {"batch_size": 0}}, "hyperparameters: hyperparameter 'batch_size' must be >= 1"),
        ({"hyperparameters": {"beam": 2}}, "hyperparameters: Unknown hyperparameter 'beam'"),
        ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"evaluate_base_model": True}, "base_model: evaluate_base_model=True needs a base model, or a model"),
    ],
)
def test_field_errors(change: dict, message: str) -> None:
    data = json.loads(_benchmark().validate().to_json())
    data.update(change)
    with pytest.raises(SpecError, match=f"^spec.json: {message}"):
        EvaluationSpec.from_json(json.dumps(data))


def test_benchmark_without_subtasks_says_so() -> None:
    with pytest.raises(SpecError, match=r"Valid subtasks: \(none: this benchmark has no subtasks\)"):
        EvaluationSpec(eval_type="benchmark", model="m", benchmark="gsm8k", subtasks=["main"]).validate()


def test_judge_limits() -> None:
    many = [CustomJudgeMetric(f"m{i}", "d", "{response}") for i in range(11)]
    with pytest.raises(SpecError, match=r"judge\.custom_metrics: at most 10 custom metrics, got 11"):
        EvaluationSpec(eval_type="llm_as_judge", model="m", dataset=DatasetSpec("d.jsonl"),
                       judge=JudgeSpec("bedrock:x", [], many)).validate()  # fmt: skip
    big = [CustomJudgeMetric("big", "d", "{response}" + "x" * 10 * 1024)]
    with pytest.raises(SpecError, match=r"judge.custom_metrics\[0\].prompt_template: 10250 bytes exceeds 10240"):
        EvaluationSpec(eval_type="llm_as_judge", model="m", dataset=DatasetSpec("d.jsonl"),
                       judge=JudgeSpec("bedrock:x", [], big)).validate()  # fmt: skip
