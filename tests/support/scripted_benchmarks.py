"""Helpers for benchmark tests: specs, the real OpenAI backend against the loopback server, and
scripted echo-logprob replies.

The scripted echo reply has the shape an OpenAI-compatible ``/completions`` answer has for
``echo=true, logprobs=1, max_tokens=1``: the prompt's tokens (here: the context as one token and
the continuation as one token) and the one generated token, each with ``token_logprobs``,
``top_logprobs`` and ``text_offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalstack.benchmarks.task import BenchmarkTask
from evalstack.models import load_backend
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate
from tests.support.openai_server import Reply, completion_body


def benchmark_spec(benchmark: str, subtasks: Sequence[str] | None = None, **hyperparameters: Any) -> EvaluationSpec:
    return EvaluationSpec(
        eval_type="benchmark",
        model="scripted",
        benchmark=benchmark,
        subtasks=list(subtasks) if subtasks else None,
        hyperparameters=hyperparameters,
    ).validate()


def backend(base_url: str, api: str = "completions", logprobs: str = "none") -> Any:
    return load_backend(f"openai:{base_url}?model=scripted&api={api}&logprobs={logprobs}", max_concurrency=8)


def run(task: BenchmarkTask, base_url: str, api: str = "completions", logprobs: str = "none"):
    """(items, records, aggregate) of the whole task against the server."""
    items = task.items()
    records = task.run(items, backend(base_url, api, logprobs))
    return items, records, task.aggregate(records)


def echo_reply(prompt: str, continuation: str, logprob: float) -> Reply:
    """An echo completion whose continuation (the prompt's last ``len(continuation)`` characters)
    has log-probability ``logprob`` and is the top token."""
    assert prompt.endswith(continuation), (prompt[-80:], continuation)
    cut = len(prompt) - len(continuation)
    logprobs = {
        "tokens": [prompt[:cut], continuation, "<gen>"],
        "token_logprobs": [None, logprob, -0.1],
        "top_logprobs": [None, {continuation: logprob}, {"<gen>": -0.1}],
        "text_offset": [0, cut, len(prompt)],
    }
    return Reply(completion_body(prompt + "<gen>", logprobs=logprobs))


def metrics_of(agg: Aggregate) -> dict[str, float]:
    return dict(agg.metrics)
