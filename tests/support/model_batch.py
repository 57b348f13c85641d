"""Run one generate batch through load_backend in its own process (kill -9 / resume tests and bench).

    python -m tests.support.model_batch <reference> <cache.sqlite> <count> <out.json> [max_concurrency]

Prompts are ``q0 .. q{count-1}``; the outputs are written as a JSON list when the batch finishes.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from typing import Any

from evalstack.models import GenerateRequest, ResponseCache, RetryPolicy, load_backend
from evalstack.storage import write_text
from tests.support.openai_server import Reply


def prompts(count: int) -> list[GenerateRequest]:
    return [GenerateRequest(prompt=f"q{i}", max_tokens=8) for i in range(count)]


class CountingCompletions:
    """A completions script for the batch above: answers ``qN`` with ``aN`` after ``latency`` seconds and
    counts the answers per prompt, so a resumed run shows which finished requests it sent again."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.answered: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        if "prompt" not in body:  # a request cut short by the kill: headers arrived, the body did not
            return Reply(status=400)
        with self._lock:
            self.answered[body["prompt"]] += 1
        return Reply({"choices": [{"index": 0, "text": "a" + body["prompt"][1:]}]}, delay=self.latency)


def main(argv: list[str]) -> None:
    reference, cache_path, count, out = argv[:4]
    concurrency = int(argv[4]) if len(argv) > 4 else 4
    with ResponseCache(cache_path) as cache:
        backend = load_backend(reference, cache=cache, max_concurrency=concurrency, retry=RetryPolicy(base_delay=0.01))
        outputs = backend.generate(prompts(int(count)))
        backend.close()
    write_text(out, json.dumps(outputs))


if __name__ == "__main__":
    main(sys.argv[1:])
