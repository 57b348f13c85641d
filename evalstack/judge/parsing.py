"""Reading a score out of a judge's answer, in the forms judges write it.

Accepted for a score, in this order:

- a JSON object with ``score``, ``rating``, ``grade``, ``verdict`` or ``result`` (any case; bare, in a
  Markdown code fence, or the first such object inside other text);
- MT-Bench's ``[[N]]``;
- a ``Rating: N`` / ``Score: N`` / ``Grade: N`` line (also ``Rating: N/5``, ``Score: N out of 5``);
- ``Verdict: Yes`` / ``Verdict: No`` (yes/no rubrics);
- ``N/5`` or ``N out of 5`` anywhere (the last one; the denominator must be the rubric's top);
- an answer that is just a number (or, for yes/no rubrics, just yes or no);
- one number in the last line of a reasoned answer ("... so I give it a 4.").

A score outside the rubric's scale is a parse failure, never clamped: a judge that answers 7 on a
1-5 scale did not follow the rubric.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from evalstack.judge.rubrics import Rubric

SCORE_KEYS = ("score", "rating", "grade", "verdict", "result")
_NUM = r"-?\d+(?:\.\d+)?"
_FENCE = re.compile(r"```(?:json|JSON)?\s*(\{.*?\})\s*```", re.DOTALL)
_RATING = re.compile(
    rf"\b(?:rating|score|grade)\s*(?:\(\s*\d+\s*-\s*\d+\s*\))?\s*[:=]\s*\**\s*({_NUM})"
    rf"(?:\s*(?:/|out of)\s*(\d+))?",
    re.IGNORECASE,
)
_DOUBLE_BRACKET = re.compile(rf"\[\[\s*({_NUM})\s*\]\]")
_VERDICT_YES_NO = re.compile(r"\bverdict\s*[:=]\s*\**\s*(yes|no)\b", re.IGNORECASE)
_FRACTION = re.compile(rf"(?<![\d.])({_NUM})\s*(?:/|out of)\s*(\d+)\b", re.IGNORECASE)
_BARE = re.compile(rf"^\s*({_NUM})\s*\.?\s*$")
_ANY_NUMBER = re.compile(rf"(?<![\w.]){_NUM}(?![\w]|\.\d)")
_YES_NO = {"yes": 1.0, "no": 0.0}


@dataclass(frozen=True)
class Parsed:
    """One parse attempt. ``score`` is None exactly when ``error`` is set."""

    score: float | None
    reasoning: str | None
    # json | fenced_json | embedded_json | double_bracket | rating | verdict | fraction | bare | last_line
    format: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _score_key(obj: dict[str, Any]) -> str | None:
    by_lower = {k.lower(): k for k in obj if isinstance(k, str)}
    return next((by_lower[k] for k in SCORE_KEYS if k in by_lower), None)


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` that carries a score key (else the first object at all)."""
    decoder = json.JSONDecoder()
    first = None
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            if _score_key(value) is not None:
                return value
            first = first if first is not None else value
    return first


def _number(value: Any, rubric: Rubric) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().rstrip(".")
        if rubric.binary and text in _YES_NO:
            return _YES_NO[text]
        if _BARE.match(text):
            return float(text)
        fraction = _FRACTION.fullmatch(text)
        if fraction and float(fraction.group(2)) == rubric.high:
            return float(fraction.group(1))
    return None


def _checked(score: float | None, raw: Any, rubric: Rubric, reasoning: str | None, fmt: str) -> Parsed:
    if score is None or not math.isfinite(score):
        return Parsed(None, reasoning, fmt, f"score {raw!r} is not a number")
    if rubric.binary and score not in (0.0, 1.0):
        return Parsed(None, reasoning, fmt, f"score {raw!r} is not 0/1 (no/yes)")
    if not rubric.low <= score <= rubric.high:
        return Parsed(None, reasoning, fmt, f"score {raw!r} is outside the scale {rubric.low}-{rubric.high}")
    return Parsed(score, reasoning, fmt)


def _from_object(obj: dict[str, Any], rubric: Rubric, fmt: str) -> Parsed:
    reasoning = next(
        (obj[k] for k in obj if isinstance(k, str) and k.lower() in ("reasoning", "explanation", "justification")),
        None,
    )
    reasoning = reasoning if isinstance(reasoning, str) else None
    key = _score_key(obj)
    if key is None:
        return Parsed(None, reasoning, fmt, f"JSON answer has no 'score' (nor any of {', '.join(SCORE_KEYS[1:])})")
    return _checked(_number(obj[key], rubric), obj[key], rubric, reasoning, fmt)


def _json_answer(text: str, rubric: Rubric) -> Parsed | None:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return _from_object(value, rubric, "json")
    fence = _FENCE.search(text)
    if fence:
        try:
            value = json.loads(fence.group(1))
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return _from_object(value, rubric, "fenced_json")
    embedded = _first_json_object(text)
    if embedded is not None and _score_key(embedded) is not None:
        return _from_object(embedded, rubric, "embedded_json")
    return None


def _before(text: str, start: int) -> str | None:
    """Whatever precedes the score is the judge's justification."""
    return text[:start].strip() or None


def _fraction_score(value: str, denominator: str | None, rubric: Rubric) -> tuple[float | None, str]:
    if denominator is not None and float(denominator) != rubric.high:
        return None, f"{value}/{denominator} (this rubric's scale is {rubric.low}-{rubric.high})"
    return float(value), value


def _last_line_number(text: str, rubric: Rubric) -> Parsed | None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 1:
        return None
    last = lines[-1]
    if rubric.binary:
        word = re.fullmatch(r"\W*(yes|no)\W*", last.strip(), re.IGNORECASE)
        if word:
            return _checked(
                _YES_NO[word.group(1).lower()], word.group(1), rubric, _before(text, text.rfind(last)), "last_line"
            )
    numbers = _ANY_NUMBER.findall(last)
    if len(numbers) != 1:
        return None
    return _checked(float(numbers[0]), numbers[0], rubric, _before(text, text.rfind(last)) or None, "last_line")


def parse_judgement(text: str, rubric: Rubric) -> Parsed:
    """The score in ``text`` on ``rubric``'s scale, or a Parsed with ``error`` saying why not."""
    from_json = _json_answer(text, rubric)
    if from_json is not None:
        return from_json
    bracket = _DOUBLE_BRACKET.search(text)
    if bracket:
        return _checked(
            float(bracket.group(1)), bracket.group(1), rubric, _before(text, bracket.start()), "double_bracket"
        )
    rating = _RATING.search(text)
    if rating:
        score, raw = _fraction_score(rating.group(1), rating.group(2), rubric)
        return _checked(score, raw, rubric, _before(text, rating.start()), "rating")
    if rubric.binary:
        verdict = _VERDICT_YES_NO.search(text)
        if verdict:
            word = verdict.group(1).lower()
            return _checked(_YES_NO[word], word, rubric, _before(text, verdict.start()), "verdict")
    fractions = list(_FRACTION.finditer(text))
    if fractions:
        last = fractions[-1]
        score, raw = _fraction_score(last.group(1), last.group(2), rubric)
        return _checked(score, raw, rubric, _before(text, last.start()), "fraction")
    stripped = text.strip()
    bare = _number(stripped, rubric)
    if bare is not None:
        return _checked(bare, stripped, rubric, None, "bare")
    last_line = _last_line_number(text, rubric)
    if last_line is not None:
        return last_line
    return Parsed(
        None,
        None,
        None,
        "no JSON score, [[N]], 'Rating: N', 'N/5', bare number or number in the last line found",
    )


_VERDICT_WORD = re.compile(r"\b(?:winner|verdict|better)\s*[:=]\s*\**\s*\[*\s*(A|B|tie)\b", re.IGNORECASE)
_BRACKETED = re.compile(r"\[\[\s*(A|B|tie|C)\s*\]\]", re.IGNORECASE)


def _verdict(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    word = value.strip().strip(".").strip().lower()
    return {"a": "A", "b": "B", "tie": "tie", "c": "tie"}.get(word)


@dataclass(frozen=True)
class ParsedVerdict:
    winner: str | None  # "A", "B" or "tie"; None on failure
    reasoning: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_verdict(text: str) -> ParsedVerdict:
    """Which shown answer the judge preferred: JSON ``winner``, ``Winner: A``, ``[[A]]`` or a bare A/B/tie."""
    stripped = text.strip()
    obj = None
    fence = _FENCE.search(text)
    for candidate in (stripped if stripped.startswith("{") else None, fence.group(1) if fence else None):
        if candidate is None:
            continue
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            obj = value
            break
    if obj is None:
        obj = _first_json_object(text)
    if obj is not None and "winner" in obj:
        reasoning = obj.get("reasoning") if isinstance(obj.get("reasoning"), str) else None
        winner = _verdict(obj["winner"])
        if winner is None:
            return ParsedVerdict(None, reasoning, f"winner {obj['winner']!r} is not A, B or tie")
        return ParsedVerdict(winner, reasoning)
    for pattern in (_VERDICT_WORD, _BRACKETED):
        match = pattern.search(text)
        if match:
            return ParsedVerdict(_verdict(match.group(1)), text[: match.start()].strip() or None)
    winner = _verdict(stripped)
    if winner is not None:
        return ParsedVerdict(winner, None)
    return ParsedVerdict(None, None, "no verdict (A, B or tie) found")
