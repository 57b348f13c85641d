"""Limits and custom-metric validation: clear ValueErrors before any model is called."""

from __future__ import annotations

import json

import pytest

from evalstack.judge import validate_custom_metrics
from evalstack.judge.task import JudgeTask, judge_reference
from evalstack.spec import CustomJudgeMetric
from tests.support.judge_data import judge_spec, truthfulqa_questions, write_dataset

JUDGE = "openai:http://127.0.0.1:9/v1?model=judge"  # never called: every case fails before any request


def metric(**overrides):
    base = {
        "name": "technical_accuracy",
        "description": "Technical accuracy of the explanation",
        "prompt_template": "Question: {question}\nExplanation: {response}\nRate 1-5.\nRating:",
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([metric(prompt_template="Q: {question}\nA: {response}\nGold: {answer}")], r"unknown placeholder \{answer\}"),
        ([metric(prompt_template="A: {response} {}")], r"unknown placeholder \{\}"),
        ([metric(prompt_template="A: {response!r}")], r"unknown placeholder \{response!r\}"),
        ([metric(prompt_template="A: {response:>10}")], r"unknown placeholder \{response:>10\}"),
        ([metric(prompt_template="A: {response")], r"invalid template syntax"),
        ([metric(prompt_template="Question: {question} only")], r"must contain \{response\}"),
        ([metric(prompt_template="{response}" + "x" * 10 * 1024)], r"10250 bytes exceeds the 10240-byte limit"),
        ([metric(name=f"m{i}") for i in range(11)], r"at most 10 custom metrics, got 11"),
        ([metric(), metric()], r"'technical_accuracy' is already used"),
        ([metric(name="helpfulness")], r"'helpfulness' is already used"),
        ([metric(scale=[5, 1])], r"scale: must be two integers"),
        ([metric(scale=[1, 2.5])], r"scale: must be two integers"),
        ([metric(description="")], r"custom_metrics\[0\]\.description: required"),
        ([metric(weight=2)], r"unknown field\(s\) \['weight'\]"),
        ([metric(name="has space")], r"must start with a letter"),
    ],
)
def test_custom_metric_errors(metrics, message):
    with pytest.raises(ValueError, match=message):
        validate_custom_metrics(metrics)


def test_valid_custom_metrics_and_literal_braces():
    rubrics = validate_custom_metrics(
        [
            metric(),
            metric(
                name="grounding",
                prompt_template="Context: {context}\nPrompt: {prompt}\nAnswer: {response}\nGold: {reference}\n"
                'Answer as {{"score": N}}.',
                scale=[0, 3],
            ),
        ]
    )
    assert [(r.name, r.low, r.high) for r in rubrics] == [("technical_accuracy", 1, 5), ("grounding", 0, 3)]
    assert rubrics[1].placeholders == {"context", "prompt", "response", "reference"}


def test_judge_task_validates_custom_metrics_before_reading_anything(tmp_path):
    # The dataset does not exist: the metric error must come first.
    spec = judge_spec(
        tmp_path / "missing.jsonl",
        JUDGE,
        [],
        custom_metrics=[metric(prompt_template="{response} vs {gold}")],
    )
    with pytest.raises(ValueError, match=r"custom_metrics\[0\]\.prompt_template: unknown placeholder \{gold\}"):
        JudgeTask(spec, "candidate")
    spec.judge.custom_metrics = [CustomJudgeMetric(**metric(name=f"m{i}")) for i in range(11)]
    with pytest.raises(ValueError, match="at most 10 custom metrics"):
        JudgeTask(spec, "candidate")


def test_too_few_samples(tmp_path):
    dataset = write_dataset(tmp_path / "nine.jsonl", truthfulqa_questions(9))
    task = JudgeTask(judge_spec(dataset, JUDGE, ["helpfulness"]), "candidate")
    with pytest.raises(ValueError, match=r"nine\.jsonl: 9 record\(s\); a dataset needs at least 10"):
        task.items()


def test_limit_below_ten_samples(tmp_path):
    dataset = write_dataset(tmp_path / "qa.jsonl", truthfulqa_questions(12))
    task = JudgeTask(judge_spec(dataset, JUDGE, ["helpfulness"], hyperparameters={"limit": 5}), "candidate")
    with pytest.raises(ValueError, match=r"hyperparameters\.limit: 5 sample\(s\) selected; .* at least 10"):
        task.items()


def test_more_than_ten_thousand_prompts(tmp_path):
    rows = truthfulqa_questions(100)
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(10_001):
            row = rows[i % len(rows)]
            f.write(json.dumps({"prompt": f"{row['question']} (#{i})", "response": row["best"]}) + "\n")
    task = JudgeTask(judge_spec(path, JUDGE, ["helpfulness"]), "candidate")
    with pytest.raises(ValueError, match=r"big\.jsonl: more than 10,000 prompts"):
        task.items()
    limited = JudgeTask(judge_spec(path, JUDGE, ["helpfulness"], hyperparameters={"limit": 10_000}), "candidate")
    assert len(limited.items()) == 10_000


def test_judge_reference_forms():
    model_id = "anthropic.claude-3-sonnet-20240229-v1:0"
    assert judge_reference(model_id) == f"bedrock:{model_id}"
    assert judge_reference("us.anthropic.claude-3-5-sonnet-20240620-v1:0").startswith("bedrock:us.")
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    assert judge_reference(arn) == f"bedrock:{arn}"
    assert judge_reference(JUDGE) == JUDGE
    with pytest.raises(ValueError, match="neither a Bedrock model id nor a model reference"):
        judge_reference("my-judge")
    with pytest.raises(ValueError, match="unknown scheme 'gpt'"):
        judge_reference("gpt:4")


def test_dataclass_metrics_are_checked_like_dicts():
    with pytest.raises(ValueError, match=r"custom_metrics\[0\]\.description: required non-empty string"):
        validate_custom_metrics([CustomJudgeMetric(**metric(description=" "))])
    with pytest.raises(ValueError, match=r"custom_metrics\[0\]: a custom metric is a dict"):
        validate_custom_metrics(["helpfulness"])
