"""Base versus fine-tuned: per-metric comparison and the position-swapped pairwise judge."""

from __future__ import annotations

import json

import pytest

from evalstack.engine.run import evaluate_in_process
from evalstack.judge.task import JudgeTask
from evalstack.models import ResponseCache, load_backend
from tests.support.judge_data import judge_spec, truthfulqa_questions, write_dataset
from tests.support.openai_server import prompt_of, serve

STRICT = "IMPORTANT: your previous answer could not be read"


def _between(prompt: str, start: str, end: str) -> str:
    return prompt.split(start, 1)[1].split(end, 1)[0]


def _judge(rows: list[dict[str, str]], pairwise_rule):
    """Helpfulness: 5 for TruthfulQA's best answer, 2 for an incorrect one. Pairwise: ``pairwise_rule``."""
    best = {r["best"] for r in rows}
    questions = [r["question"] for r in rows]

    def script(path: str, body: dict) -> str:
        prompt = prompt_of(path, body)
        question = _between(prompt, "[Question]\n", "\n\n")
        index = questions.index(question)
        if "Metric: helpfulness" in prompt:
            return "Rating: 5" if _between(prompt, "[Response]\n", "\n\n") in best else "Rating: 2"
        first = _between(prompt, "[Response A]\n", "\n\n")
        second = _between(prompt, "[Response B]\n", "\n\n")
        return pairwise_rule(index, first in best, second in best, STRICT in prompt)

    return script


def _mixed_rule(index: int, first_is_best: bool, second_is_best: bool, retry: bool) -> str:
    if index <= 5:  # judges on content: the true answer wins
        return json.dumps({"reasoning": "true answer", "winner": "A" if first_is_best else "B"})
    if index <= 8:  # position-biased: always the first shown
        return "Winner: A"
    if index == 9:  # consistently prefers the base model's (incorrect) answer
        return "[[B]]" if first_is_best else "[[A]]"
    if index == 10:
        return '```json\n{"reasoning": "equal", "winner": "tie"}\n```'
    return "both are fine I guess" if not retry else "really cannot say"


def test_base_vs_fine_tuned_end_to_end(tmp_path):
    rows = truthfulqa_questions(12)
    dataset = write_dataset(tmp_path / "qa.jsonl", rows)
    incorrect = {r["question"]: r["incorrect"] for r in rows}
    with serve(lambda p, b: incorrect[prompt_of(p, b)]) as base_server, serve(_judge(rows, _mixed_rule)) as judge:
        spec = judge_spec(
            dataset,
            f"openai:{judge.base_url}?model=judge&api=chat",
            ["helpfulness"],
            base_model=f"openai:{base_server.base_url}?model=base&api=chat",
            evaluate_base_model=True,
        )
        spec.validate()
        out = tmp_path / "out"
        report = evaluate_in_process(spec, str(out))
        assert len(base_server.requests) == 12  # the base answered every question; the candidate's came from data

    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["fine_tuned"]["helpfulness"] == 1.0
    assert comparison["base"]["helpfulness"] == 0.25
    assert comparison["improvements"]["helpfulness"] == 0.75
    assert comparison["improvements"]["helpfulness_pass_rate"] == 1.0
    pairwise = comparison["pairwise"]
    assert (pairwise["wins"], pairwise["ties"], pairwise["losses"], pairwise["parse_failures"]) == (6, 4, 1, 1)
    assert pairwise["n"] == 11
    assert pairwise["win_rate"] == pytest.approx(6 / 11)
    assert pairwise["tie_rate"] == pytest.approx(4 / 11)
    assert pairwise["loss_rate"] == pytest.approx(1 / 11)
    assert pairwise["consistency_rate"] == pytest.approx(8 / 11)
    assert pairwise["retries"] == 2
    outcomes = [s["outcome"] for s in pairwise["samples"]]
    assert outcomes == ["win"] * 6 + ["tie"] * 3 + ["loss", "tie", "parse_failure"]
    assert report.summary()["improvement"]["helpfulness"] == 0.75

    base_samples = [json.loads(line) for line in (out / "base" / "samples.jsonl").read_text().splitlines()]
    assert [s["response"] for s in base_samples] == [r["incorrect"] for r in rows]
    assert {s["response_source"] for s in base_samples} == {"model"}
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["helpfulness"] == 1.0
    assert results["details"]["per_metric"]["helpfulness"]["n"] == 12


def test_judge_that_always_prefers_the_first_answer_yields_ties(tmp_path):
    rows = truthfulqa_questions(12)
    dataset = write_dataset(tmp_path / "qa.jsonl", rows)
    incorrect = {r["question"]: r["incorrect"] for r in rows}
    always_first = _judge(rows, lambda index, first_is_best, second_is_best, retry: '{"reasoning": "x", "winner": "A"}')
    with serve(lambda p, b: incorrect[prompt_of(p, b)]) as base_server, serve(always_first) as judge:
        spec = judge_spec(
            dataset,
            f"openai:{judge.base_url}?model=judge&api=chat",
            ["helpfulness"],
            base_model=f"openai:{base_server.base_url}?model=base&api=chat",
            evaluate_base_model=True,
        )
        candidate, base = JudgeTask(spec, "candidate"), JudgeTask(spec, "base")
        base_model = load_backend(spec.base_model, cache=ResponseCache(":memory:"))
        comparison = candidate.compare(candidate.run(candidate.items(), None), base.run(base.items(), base_model))
        pairwise_requests = [b for p, b in judge.requests if "[Response A]" in prompt_of(p, b)]
    pairwise = comparison["pairwise"]
    assert len(pairwise_requests) == 24  # each pair judged in both orders
    assert (pairwise["wins"], pairwise["ties"], pairwise["losses"]) == (0, 12, 0)
    assert pairwise["tie_rate"] == 1.0
    assert pairwise["consistency_rate"] == 0.0
    # The per-metric comparison still sees the better answers.
    assert comparison["improvement"]["helpfulness"] == 0.75
