"""How long each model request took, for the report's slowest samples.

The :class:`~evalstack.models.dispatch.Dispatcher` times every request it sends and reports the
times of each batch to the collector of the calling context, when one is active (the engine opens
one around each call to the evaluated model; nothing is collected otherwise). Time is measured
only here, never stored in records or the response cache: samples.jsonl stays byte-identical
across reruns and shard counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RequestTime:
    """One request of a batch: seconds from its first send to its answer (retries and backoff
    included), and whether the answer came without a send (the response cache, or a duplicate)."""

    seconds: float
    cached: bool


_batches: ContextVar[list[list[RequestTime]] | None] = ContextVar("evalstack_request_times", default=None)


@contextmanager
def collecting() -> Iterator[list[list[RequestTime]]]:
    """Collect the request times of every dispatcher batch run in this context, in order."""
    batches: list[list[RequestTime]] = []
    token = _batches.set(batches)
    try:
        yield batches
    finally:
        _batches.reset(token)


def record_batch(times: list[RequestTime]) -> None:
    """Called by the dispatcher once per batch, with one entry per request in request order."""
    batches = _batches.get()
    if batches is not None:
        batches.append(times)


def timed(into: dict[str, float], key: str, call: Callable[..., T], *args: object) -> T:
    """``call(*args)``, storing its duration under ``key`` (each key is written by one thread)."""
    started = time.monotonic()
    result = call(*args)
    into[key] = time.monotonic() - started
    return result
