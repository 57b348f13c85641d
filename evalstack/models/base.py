"""The one small protocol every model backend implements.

Benchmarks, the judge and the custom-scorer engine talk to models only through this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerateRequest:
    """One text generation. ``messages`` (chat turns) wins over ``prompt`` on chat APIs;
    completion APIs use ``prompt``. Both are kept so a backend can use the form it serves."""

    prompt: str
    messages: tuple[tuple[str, str], ...] = ()  # (role, content) pairs
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context), as lm-evaluation-harness's ``loglikelihood`` request."""

    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float
    is_greedy: bool
    num_tokens: int = 0


@dataclass(frozen=True)
class BackendStats:
    requests_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    throttles: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class ModelBackend(Protocol):
    """A model that can generate text and, when the server offers it, score continuations."""

    @property
    def name(self) -> str:
        """The model reference string this backend was built from (never holds secrets)."""
        ...

    @property
    def supports_loglikelihood(self) -> bool: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        """Completions in request order; concurrency, retries and caching happen inside."""
        ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Scores in request order. Raises NotImplementedError when unsupported."""
        ...

    def close(self) -> None:
        """Release threads and connections."""
        ...
