"""Judge-answer parsing: every accepted format, and what counts as a failure."""

from __future__ import annotations

import pytest

from evalstack.judge import BUILTIN_RUBRICS, Sample, parse_judgement, parse_verdict
from evalstack.judge.rubrics import NO_REFERENCE_NOTE
from tests.support.judge_data import truthfulqa_questions

LIKERT = BUILTIN_RUBRICS["helpfulness"]
BINARY = BUILTIN_RUBRICS["harmfulness"]


@pytest.mark.parametrize(
    ("text", "score", "fmt", "reasoning"),
    [
        ('{"reasoning": "clear", "score": 4}', 4.0, "json", "clear"),
        ('  {"score": 2, "reasoning": "thin"}\n', 2.0, "json", "thin"),
        ('```json\n{"reasoning": "ok", "score": 3}\n```', 3.0, "fenced_json", "ok"),
        ('```\n{"reasoning": "ok", "score": 5}\n```', 5.0, "fenced_json", "ok"),
        ('Sure. {"reasoning": "fine", "score": "4"} Hope that helps.', 4.0, "embedded_json", "fine"),
        ("It answers the question directly.\nRating: 5", 5.0, "rating", "It answers the question directly."),
        ("rating = 1", 1.0, "rating", None),
        ("Score: **3**", 3.0, "rating", None),
        ("4", 4.0, "bare", None),
        ("4.", 4.0, "bare", None),
        ("3.5", 3.5, "bare", None),
    ],
)
def test_accepted_formats(text, score, fmt, reasoning):
    parsed = parse_judgement(text, LIKERT)
    assert (parsed.score, parsed.format, parsed.reasoning, parsed.error) == (score, fmt, reasoning, None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"score": 6}', "outside the scale 1-5"),
        ("Rating: 0", "outside the scale 1-5"),
        ("9", "outside the scale 1-5"),
        ('{"reasoning": "no number"}', "has no 'score'"),
        ('{"score": "excellent"}', "not a number"),
        ('{"score": true}', "not a number"),
        ("The response is good.", "no JSON score"),
        ("", "no JSON score"),
    ],
)
def test_failures(text, error):
    parsed = parse_judgement(text, LIKERT)
    assert parsed.score is None
    assert error in parsed.error


@pytest.mark.parametrize(
    ("text", "score"),
    [("yes", 1.0), ("No", 0.0), ('{"score": "yes"}', 1.0), ('{"score": 0}', 0.0), ("Rating: 1", 1.0)],
)
def test_binary(text, score):
    assert parse_judgement(text, BINARY).score == score


@pytest.mark.parametrize("text", ["0.5", '{"score": 2}', "maybe"])
def test_binary_failures(text):
    assert not parse_judgement(text, BINARY).ok


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"reasoning": "A is right", "winner": "A"}', "A"),
        ('```json\n{"winner": "b"}\n```', "B"),
        ('{"winner": "tie"}', "tie"),
        ("Both are close. Winner: B", "B"),
        ("[[A]]", "A"),
        ("[[C]]", "tie"),
        ("tie", "tie"),
        ("B", "B"),
    ],
)
def test_verdicts(text, winner):
    assert parse_verdict(text).winner == winner


@pytest.mark.parametrize("text", ['{"winner": "both"}', "I like them both", ""])
def test_verdict_failures(text):
    assert not parse_verdict(text).ok


def test_rubrics_render_real_questions():
    row = truthfulqa_questions(1)[0]
    assert set(BUILTIN_RUBRICS) == {
        "helpfulness",
        "relevance",
        "correctness",
        "coherence",
        "harmfulness",
        "toxicity",
        "stereotypes",
        "refusal",
        "completeness",
        "conciseness",
    }
    for rubric in BUILTIN_RUBRICS.values():
        shown = rubric.render(Sample(row["question"], row["best"], row["best"]))
        assert f"[Question]\n{row['question']}\n" in shown.prompt
        assert f"[Response]\n{row['best']}\n" in shown.prompt
        assert '"score"' in shown.prompt
        assert shown.reference_used == rubric.needs_reference
        unreferenced = rubric.render(Sample(row["question"], row["best"]))
        assert "[Reference answer]" not in unreferenced.prompt
        assert unreferenced.note == (NO_REFERENCE_NOTE if rubric.needs_reference else None)
    assert [r.name for r in BUILTIN_RUBRICS.values() if r.binary] == ["harmfulness", "refusal"]
    assert [r.name for r in BUILTIN_RUBRICS.values() if r.needs_reference] == ["correctness", "completeness"]
    assert BUILTIN_RUBRICS["toxicity"].normalise(5) == 1.0
    assert BUILTIN_RUBRICS["toxicity"].passes(0.25, 0.5)  # low toxicity passes
    assert not BUILTIN_RUBRICS["toxicity"].passes(0.75, 0.5)
