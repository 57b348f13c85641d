"""JudgeTask against a loopback OpenAI-compatible judge scripted with known ratings in every
accepted format plus garbage, on real TruthfulQA questions."""

from __future__ import annotations

import json
import math

import pytest

from evalstack.judge.rubrics import NO_REFERENCE_NOTE
from evalstack.judge.task import JudgeTask
from evalstack.models import ResponseCache, load_backend
from tests.support.judge_data import judge_spec, truthfulqa_questions, write_dataset
from tests.support.openai_server import prompt_of, serve

T_975_9 = 2.2621571627409915  # Student t 0.975 quantile, 9 degrees of freedom
T_975_10 = 2.2281388519649385  # 10 degrees of freedom
STRICT = "IMPORTANT: your previous answer could not be read"

# Question index -> (first answer, answer to the stricter retry) for helpfulness (1-5).
HELPFULNESS = {
    0: ('{"reasoning": "accurate and direct", "score": 5}', None),
    1: ('```json\n{"reasoning": "mostly right", "score": 4}\n```', None),
    2: ("The answer is accurate but terse.\nRating: 3", None),
    3: ("2", None),
    4: ('My assessment follows. {"reasoning": "wrong", "score": 1} That is all.', None),
    5: ("Score: 4", None),
    6: ("I cannot decide on this one.", '{"reasoning": "fine on reflection", "score": 5}'),
    7: ("no idea", "still no idea"),
    8: ('{"reasoning": "great", "score": 7}', '{"reasoning": "good", "score": 4}'),
    9: ("Rating: 0", "Rating: 9"),
    10: ("3", None),
    11: ('{"reasoning": "complete", "score": "5"}', None),
}
# Refusal (yes/no): index 2, 3, 4 refuse; 5 answers out of scale twice.
REFUSAL = {2: "yes", 3: '{"reasoning": "declines", "score": "yes"}', 4: "Rating: 1", 5: '{"score": 2}', 1: "no"}


def _question_index(prompt: str, questions: list[str]) -> int:
    matches = [i for i, q in enumerate(questions) if f"[Question]\n{q}\n" in prompt or f"Question: {q}\n" in prompt]
    assert len(matches) == 1, prompt
    return matches[0]


def _judge_script(questions: list[str]):
    def script(path: str, body: dict) -> str:
        prompt = prompt_of(path, body)
        assert body["temperature"] == 0.0
        i = _question_index(prompt, questions)
        retry = STRICT in prompt
        if "Metric: helpfulness" in prompt:
            first, second = HELPFULNESS[i]
            return second if retry else first
        if "Metric: refusal" in prompt:
            return REFUSAL.get(i, '{"reasoning": "answers the question", "score": 0}')
        if "Metric: correctness" in prompt:
            return "Rating: 5" if "[Reference answer]" in prompt else "Rating: 2"
        if "Rate the truthfulness" in prompt:  # the custom metric, 0-10
            return f"Rating: {i % 11}"
        raise AssertionError(f"unexpected judge prompt: {prompt[:200]}")

    return script


def test_scripted_judge_aggregates_parse_failures_and_retries(tmp_path):
    rows = truthfulqa_questions(12)
    dataset = write_dataset(tmp_path / "qa.jsonl", rows)
    with serve(_judge_script([r["question"] for r in rows])) as server:
        spec = judge_spec(dataset, f"openai:{server.base_url}?model=judge&api=chat", ["helpfulness", "refusal"])
        task = JudgeTask(spec, "candidate")
        assert not task.needs_model
        items = task.items()
        records = task.run(items, None)
        agg = task.aggregate(records)
        # 12 helpfulness first answers + 4 retries, 12 refusal first answers + 1 retry.
        assert len(server.requests) == 29

    help_scores = [5, 4, 3, 2, 1, 4, 5, None, 4, None, 3, 5]
    for record, expected in zip(records, help_scores, strict=True):
        judged = record["judgements"]["helpfulness"]
        assert judged["score"] == expected
        assert record["response_source"] == "dataset"
    statuses = [r["judgements"]["helpfulness"]["parse_status"] for r in records]
    assert statuses == ["ok"] * 6 + ["ok_after_retry", "failed", "ok_after_retry", "failed", "ok", "ok"]
    formats = [r["judgements"]["helpfulness"]["parse_format"] for r in records]
    assert formats[:6] == ["json", "fenced_json", "rating", "bare", "embedded_json", "rating"]
    assert records[0]["judgements"]["helpfulness"]["reasoning"] == "accurate and direct"
    assert records[7]["judgements"]["helpfulness"]["raw_outputs"] == ["no idea", "still no idea"]
    assert "helpfulness" not in records[7]["scores"]
    assert records[8]["judgements"]["helpfulness"]["retries"] == 1

    normalised = [(s - 1) / 4 for s in help_scores if s is not None]
    mean = sum(normalised) / 10
    std = math.sqrt(sum((v - mean) ** 2 for v in normalised) / 9)
    assert mean == pytest.approx(0.65)
    assert std == pytest.approx(math.sqrt(1.025 / 9))
    helpfulness = agg.details["per_metric"]["helpfulness"]
    assert helpfulness["n"] == 10
    assert helpfulness["parse_failures"] == 2
    assert helpfulness["retries"] == 4
    assert helpfulness["raw_mean"] == pytest.approx(3.6)
    assert helpfulness["std"] == pytest.approx(std)
    assert helpfulness["pass_rate"] == pytest.approx(0.8)  # 8 of 10 at or above 0.5
    half = T_975_9 * std / math.sqrt(10)
    assert agg.confidence_intervals["helpfulness"] == pytest.approx([mean - half, mean + half])
    assert agg.metrics["helpfulness"] == pytest.approx(0.65)
    assert agg.metrics["helpfulness_pass_rate"] == pytest.approx(0.8)
    assert agg.stderr["helpfulness"] == pytest.approx(std / math.sqrt(10))

    refusal = agg.details["per_metric"]["refusal"]
    assert refusal["n"] == 11
    assert refusal["parse_failures"] == 1
    assert refusal["retries"] == 1
    assert refusal["scale"] == "yes/no (1 = yes, 0 = no)"
    assert agg.metrics["refusal"] == pytest.approx(3 / 11)
    # Refusal is not wanted: a sample passes when it does not refuse.
    assert agg.metrics["refusal_pass_rate"] == pytest.approx(8 / 11)
    r_mean = 3 / 11
    r_std = math.sqrt((3 * (1 - r_mean) ** 2 + 8 * r_mean**2) / 10)
    r_half = T_975_10 * r_std / math.sqrt(11)
    assert agg.confidence_intervals["refusal"] == pytest.approx([r_mean - r_half, r_mean + r_half])
    assert agg.details["parse_failures"] == 3
    assert agg.details["retries"] == 5


def test_rerun_is_served_from_the_cache(tmp_path):
    rows = truthfulqa_questions(12)
    dataset = write_dataset(tmp_path / "qa.jsonl", rows)
    with serve(_judge_script([r["question"] for r in rows])) as server:
        spec = judge_spec(dataset, f"openai:{server.base_url}?model=judge&api=chat", ["helpfulness"])
        first = JudgeTask(spec, "candidate")
        records = first.run(first.items(), None)
        sent = len(server.requests)
        again = JudgeTask(spec, "candidate")
        assert again.run(again.items(), None) == records
        assert len(server.requests) == sent == 16  # 12 first answers + 4 stricter retries, none repeated


def test_reference_used_when_present_and_noted_when_absent(tmp_path):
    rows = truthfulqa_questions(12)
    dataset = tmp_path / "qa.jsonl"
    write_dataset(dataset, rows)
    lines = dataset.read_text().splitlines()
    # Drop the reference of the last two rows.
    for i in (10, 11):
        record = json.loads(lines[i])
        del record["reference"]
        lines[i] = json.dumps(record)
    dataset.write_text("\n".join(lines) + "\n")
    with serve(_judge_script([r["question"] for r in rows])) as server:
        spec = judge_spec(dataset, f"openai:{server.base_url}?model=judge&api=chat", ["correctness"])
        task = JudgeTask(spec, "candidate")
        records = task.run(task.items(), None)
    used = [r["judgements"]["correctness"]["reference_used"] for r in records]
    notes = [r["judgements"]["correctness"]["note"] for r in records]
    assert used == [True] * 10 + [False] * 2
    assert notes == [None] * 10 + [NO_REFERENCE_NOTE] * 2
    assert [r["judgements"]["correctness"]["score"] for r in records] == [5] * 10 + [2] * 2
    agg = task.aggregate(records)
    assert agg.details["per_metric"]["correctness"]["reference_missing"] == 2
    assert agg.metrics["correctness"] == pytest.approx((10 * 1.0 + 2 * 0.25) / 12)


def test_custom_metric_scale_and_candidate_generation(tmp_path):
    rows = truthfulqa_questions(12)
    dataset = write_dataset(tmp_path / "questions.jsonl", rows, responses=False)
    questions = [r["question"] for r in rows]
    custom = {
        "name": "truthfulness",
        "description": "Is the answer true?",
        "prompt_template": "Question: {question}\nAnswer: {response}\nReference: {reference}\n"
        "Rate the truthfulness of the answer from 0 to 10.",
        "scale": [0, 10],
    }
    # The candidate answers every question with the TruthfulQA best answer.
    best = {r["question"]: r["best"] for r in rows}
    with (
        serve(lambda path, body: best[prompt_of(path, body)]) as model_server,
        serve(_judge_script(questions)) as judge_server,
    ):
        spec = judge_spec(dataset, f"openai:{judge_server.base_url}?model=judge&api=chat", [], custom_metrics=[custom])
        spec.validate()
        task = JudgeTask(spec, "candidate")
        assert task.needs_model
        model = load_backend(
            f"openai:{model_server.base_url}?model=cand&api=chat", cache=ResponseCache(":memory:"), max_concurrency=4
        )
        records = task.run(task.items(), model)
        judge_prompts = [prompt_of(p, b) for p, b in judge_server.requests]
    assert [r["response"] for r in records] == [r["best"] for r in rows]
    assert {r["response_source"] for r in records} == {"model"}
    for row in rows:  # the judge saw the generated answer of each question
        shown = [p for p in judge_prompts if f"Question: {row['question']}\n" in p]
        assert len(shown) == 1
        assert f"Answer: {row['best']}\nReference: {row['best']}\n" in shown[0]
    scores = [r["judgements"]["truthfulness"]["score"] for r in records]
    assert scores == [float(i % 11) for i in range(12)]
    agg = task.aggregate(records)
    expected = sum((i % 11) / 10 for i in range(12)) / 12
    assert agg.metrics["truthfulness"] == pytest.approx(expected)
    assert agg.details["per_metric"]["truthfulness"]["scale"] == "0-10"
