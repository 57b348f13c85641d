"""Pairwise judging of candidate versus base answers, with position-bias control.

Every pair is judged twice, once with the candidate shown first and once with the base shown
first. A verdict counts only when both orders name the same model; when they disagree (the judge
followed the position, not the content) the pair is a tie. Pairs where either order stayed
unreadable after the retry are reported as parse failures and left out of the rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalstack.judge.calls import Asked, ask
from evalstack.judge.parsing import ParsedVerdict, parse_verdict
from evalstack.judge.rubrics import Sample
from evalstack.models.base import ModelBackend

_INSTRUCTIONS = (
    "You are an impartial evaluator. Compare two AI assistant responses to the same question and "
    "decide which one answers it better overall: more helpful, correct, relevant, clear and safe. "
    "The order in which the responses appear, their length and their names must not influence you."
)
_ANSWER = (
    "Reply with a JSON object and nothing else, in this form:\n"
    '{"reasoning": "<one or two sentences>", "winner": "A" or "B" or "tie"}'
)
STRICT_SUFFIX = (
    "\n\nIMPORTANT: your previous answer could not be read. Output exactly one line of JSON, "
    '{"reasoning": "<short text>", "winner": "A"|"B"|"tie"}, with no other text, no markdown and no code fences.'
)


def pairwise_prompt(question: str, first: str, second: str, reference: str | None, context: str | None) -> str:
    parts = [_INSTRUCTIONS, ""]
    if context:
        parts += ["[Context]", context, ""]
    parts += ["[Question]", question, ""]
    if reference:
        parts += ["[Reference answer]", reference, ""]
    parts += ["[Response A]", first, "", "[Response B]", second, "", _ANSWER]
    return "\n".join(parts)


@dataclass(frozen=True)
class Pair:
    id: str
    sample: Sample  # question, reference and context, with the candidate's response
    base_response: str


def _who(winner: str | None, candidate_shown_first: bool) -> str | None:
    """Translate a shown-position verdict (A/B/tie) into candidate/base/tie."""
    if winner is None or winner == "tie":
        return winner
    first = "candidate" if candidate_shown_first else "base"
    second = "base" if candidate_shown_first else "candidate"
    return first if winner == "A" else second


def _entry(pair: Pair, candidate_first: Asked[ParsedVerdict], base_first: Asked[ParsedVerdict]) -> dict[str, Any]:
    a = _who(candidate_first.parsed.winner, True)
    b = _who(base_first.parsed.winner, False)
    if a is None or b is None:
        outcome = "parse_failure"
    elif a == b:
        outcome = {"candidate": "win", "base": "loss", "tie": "tie"}[a]
    else:
        outcome = "tie"
    return {
        "id": pair.id,
        "outcome": outcome,
        "consistent": a is not None and a == b,
        "candidate_first": {
            "preferred": a,
            "raw_outputs": list(candidate_first.raw_outputs),
            "parse_status": candidate_first.status,
            "reasoning": candidate_first.parsed.reasoning,
        },
        "base_first": {
            "preferred": b,
            "raw_outputs": list(base_first.raw_outputs),
            "parse_status": base_first.status,
            "reasoning": base_first.parsed.reasoning,
        },
    }


def judge_pairs(judge: ModelBackend, pairs: Sequence[Pair], max_tokens: int) -> dict[str, Any]:
    """Win/tie/loss of the candidate against the base over ``pairs``, position-swapped."""
    prompts: list[str] = []
    for pair in pairs:
        s = pair.sample
        prompts.append(pairwise_prompt(s.question, s.response, pair.base_response, s.reference, s.context))
        prompts.append(pairwise_prompt(s.question, pair.base_response, s.response, s.reference, s.context))
    asked = ask(judge, prompts, parse_verdict, STRICT_SUFFIX, max_tokens)
    samples = [_entry(pair, asked[2 * i], asked[2 * i + 1]) for i, pair in enumerate(pairs)]
    counts = {k: sum(1 for s in samples if s["outcome"] == k) for k in ("win", "tie", "loss", "parse_failure")}
    judged = counts["win"] + counts["tie"] + counts["loss"]
    consistent = sum(1 for s in samples if s["consistent"])

    def rate(count: int) -> float | None:
        return count / judged if judged else None

    return {
        "n": judged,
        "wins": counts["win"],
        "ties": counts["tie"],
        "losses": counts["loss"],
        "win_rate": rate(counts["win"]),
        "tie_rate": rate(counts["tie"]),
        "loss_rate": rate(counts["loss"]),
        "consistency_rate": rate(consistent),
        "parse_failures": counts["parse_failure"],
        "retries": sum(a.retries for a in asked),
        "position_swapped": True,
        "samples": samples,
    }
