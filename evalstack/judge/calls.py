"""Judge calls: temperature 0 through the normal backend, with one stricter retry per bad answer.

All first attempts go out as one batch (the backend runs them concurrently and caches each), then
every unreadable answer is asked again once, in a second batch, with the rubric's stricter
instruction appended. The retry prompt differs from the first, so it is a new request and never
the cached bad answer; rerunning an evaluation replays both from the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from evalstack.models.base import GenerateRequest, ModelBackend


class _Result(Protocol):
    @property
    def ok(self) -> bool: ...


P = TypeVar("P", bound=_Result)


@dataclass(frozen=True)
class Asked(Generic[P]):
    """The outcome of one judge question: the parse of the last answer, every raw answer, retries."""

    parsed: P
    raw_outputs: tuple[str, ...]

    @property
    def retries(self) -> int:
        return len(self.raw_outputs) - 1

    @property
    def status(self) -> str:
        if not self.parsed.ok:
            return "failed"
        return "ok_after_retry" if self.retries else "ok"


def judge_request(prompt: str, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, messages=(("user", prompt),), max_tokens=max_tokens, temperature=0.0)


def ask(
    backend: ModelBackend,
    prompts: Sequence[str],
    parse: Callable[[str], P],
    strict_suffix: str,
    max_tokens: int,
) -> list[Asked[P]]:
    """Ask the judge every prompt; re-ask unreadable answers once with ``strict_suffix`` appended."""
    first = backend.generate([judge_request(p, max_tokens) for p in prompts])
    results = [Asked(parse(text), (text,)) for text in first]
    again = [i for i, result in enumerate(results) if not result.parsed.ok]
    if again:
        second = backend.generate([judge_request(prompts[i] + strict_suffix, max_tokens) for i in again])
        for i, text in zip(again, second, strict=True):
            results[i] = Asked(parse(text), (*results[i].raw_outputs, text))
    return results
