"""Run one generate batch through load_backend in its own process (kill -9 / resume tests and bench).

    python -m tests.support.model_batch <reference> <cache.sqlite> <count> <out.json> [max_concurrency]

Prompts are ``q0 .. q{count-1}``; the outputs are written as a JSON list when the batch finishes.
"""

from __future__ import annotations

import json
import sys

from evalstack.models import GenerateRequest, ResponseCache, RetryPolicy, load_backend
from evalstack.storage import write_text


def prompts(count: int) -> list[GenerateRequest]:
    return [GenerateRequest(prompt=f"q{i}", max_tokens=8) for i in range(count)]


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
