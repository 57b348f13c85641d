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


@pytest.mark.parametrize(
    ("text", "rubric", "score", "fmt"),
    [
        ('{"rating": 3, "explanation": "adequate"}', LIKERT, 3.0, "json"),
        ('{"Rating": "4"}', LIKERT, 4.0, "json"),
        ('{"grade": 2}', LIKERT, 2.0, "json"),
        ('{"result": 5, "reasoning": "complete"}', LIKERT, 5.0, "json"),
        ('{"verdict": "yes"}', BINARY, 1.0, "json"),
        ('{"verdict": "No"}', BINARY, 0.0, "json"),
        ('{"score": "4/5"}', LIKERT, 4.0, "json"),
        ('Here is my evaluation: {"rating": 2, "reasoning": "vague"} Thanks.', LIKERT, 2.0, "embedded_json"),
        ('```json\n{"grade": 1}\n```', LIKERT, 1.0, "fenced_json"),
        ("The answer is accurate and well organised.\n\nRating: [[5]]", LIKERT, 5.0, "double_bracket"),
        ("[[3]]", LIKERT, 3.0, "double_bracket"),
        ("Rating: 4/5", LIKERT, 4.0, "rating"),
        ("Score: 2 out of 5 because it misses the point.", LIKERT, 2.0, "rating"),
        ("Grade: 3", LIKERT, 3.0, "rating"),
        ("Rating (1-5): 4", LIKERT, 4.0, "rating"),
        ("The reply contains instructions for harm.\nVerdict: Yes", BINARY, 1.0, "verdict"),
        ("Verdict: no", BINARY, 0.0, "verdict"),
        ("I would rate this response 4/5.", LIKERT, 4.0, "fraction"),
        ("Overall this deserves 3 out of 5.", LIKERT, 3.0, "fraction"),
        ("It covers the main facts but skips one step.\nSo I give it a 4.", LIKERT, 4.0, "last_line"),
        ("The response refuses politely.\n\nYes", BINARY, 1.0, "last_line"),
        ("**5**", LIKERT, 5.0, "last_line"),
    ],
)
def test_judges_own_formats(text, rubric, score, fmt):
    parsed = parse_judgement(text, rubric)
    assert (parsed.score, parsed.format, parsed.error) == (score, fmt, None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Rating: 8/10", "8/10 (this rubric's scale is 1-5)"),
        ("I'd say 7 out of 10.", "7/10 (this rubric's scale is 1-5)"),
        ("Between 2 and 4, mostly.\nHard to say: 2 or 3.", "no JSON score"),
        ('{"rating": 9}', "outside the scale 1-5"),
        ('{"comment": "fine"}', "has no 'score' (nor any of rating, grade, verdict, result)"),
    ],
)
def test_unreadable_judge_formats(text, error):
    parsed = parse_judgement(text, LIKERT)
    assert parsed.score is None
    assert error in parsed.error


def _judged(statuses: list[tuple[float | None, str]]) -> list[dict]:
    """Records as JudgeTask.run writes them, for one metric (helpfulness) on a 1-5 scale."""
    return [
        {
            "id": f"line-{i}",
            "judgements": {
                "helpfulness": {
                    "score": score,
                    "normalized_score": None if score is None else (score - 1) / 4,
                    "parse_status": status,
                    "retries": 1 if status != "ok" else 0,
                    "note": None,
                }
            },
        }
        for i, (score, status) in enumerate(statuses)
    ]


def _task(tmp_path, **hyperparameters):
    from evalstack.judge.task import JudgeTask
    from tests.support.judge_data import judge_spec

    spec = judge_spec(tmp_path / "unused.jsonl", "openai:http://127.0.0.1:9/v1?model=j", ["helpfulness"])
    spec.hyperparameters = hyperparameters
    return JudgeTask(spec.validate(), "candidate")


def test_a_metric_with_no_parsed_answer_is_null_with_a_warning(tmp_path):
    agg = _task(tmp_path, max_parse_failure_rate=1.0).aggregate(_judged([(None, "failed")] * 10))
    assert agg.metrics == {"helpfulness": None, "helpfulness_pass_rate": None}
    assert agg.details["per_metric"]["helpfulness"]["parse_failures"] == 10
    assert agg.details["warnings"] == [
        "helpfulness: none of 10 judge answers could be parsed (10 parse failures); the metric is null. "
        "See raw_output in samples.jsonl"
    ]


def test_too_many_parse_failures_fail_the_evaluation(tmp_path):
    from evalstack.judge.task import JudgeParseError

    records = _judged([(4.0, "ok")] * 4 + [(None, "failed")] * 6)
    with pytest.raises(JudgeParseError, match=r"6 of 10 judge answers \(60%\) could not be parsed, more than "):
        _task(tmp_path).aggregate(records)  # default max_parse_failure_rate=0.5
    agg = _task(tmp_path, max_parse_failure_rate=0.6).aggregate(records)
    assert agg.metrics["helpfulness"] == 0.75
    assert agg.details["warnings"] == []
