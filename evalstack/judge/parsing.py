"""Reading a score out of a judge's answer.

Accepted, in this order: a JSON object with ``score`` (bare or in a Markdown code fence, or the
first JSON object inside other text), a ``Rating: N`` (or ``Score: N``) line, or an answer that is
just a number. Binary rubrics also accept ``yes``/``no``. A score outside the rubric's scale is a
parse failure, never clamped: a judge that answers 7 on a 1-5 scale did not follow the rubric.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from evalstack.judge.rubrics import Rubric

_FENCE = re.compile(r"```(?:json|JSON)?\s*(\{.*?\})\s*```", re.DOTALL)
_RATING = re.compile(r"\b(?:rating|score)\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_BARE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$")
_YES_NO = {"yes": 1.0, "no": 0.0}


@dataclass(frozen=True)
class Parsed:
    """One parse attempt. ``score`` is None exactly when ``error`` is set."""

    score: float | None
    reasoning: str | None
    format: str | None  # json | fenced_json | embedded_json | rating | bare
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _first_json_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _number(value: Any, rubric: Rubric) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if rubric.binary and text in _YES_NO:
            return _YES_NO[text]
        if _BARE.match(text):
            return float(text.rstrip(". "))
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
    reasoning = obj.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else None
    if "score" not in obj:
        return Parsed(None, reasoning, fmt, "JSON answer has no 'score'")
    return _checked(_number(obj["score"], rubric), obj["score"], rubric, reasoning, fmt)


def parse_judgement(text: str, rubric: Rubric) -> Parsed:
    """The score in ``text`` on ``rubric``'s scale, or a Parsed with ``error`` saying why not."""
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
    if embedded is not None and "score" in embedded:
        return _from_object(embedded, rubric, "embedded_json")
    rating = _RATING.search(text)
    if rating:
        # Whatever precedes the rating line is the judge's justification.
        reasoning = text[: rating.start()].strip() or None
        return _checked(float(rating.group(1)), rating.group(1), rubric, reasoning, "rating")
    bare = _number(stripped, rubric)
    if bare is not None:
        return _checked(bare, stripped, rubric, None, "bare")
    return Parsed(None, None, None, "no JSON score, 'Rating: N' or bare number found")


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
