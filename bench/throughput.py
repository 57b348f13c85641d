"""Throughput of the model layer against a loopback OpenAI-compatible server. Prints figures; not a test.

    python -m bench.throughput            # (a) zero latency, and (c) 100 ms latency at concurrency 32

(a) samples/s with a zero-latency server (client and server share this process and its GIL, so this
    is a floor for the client's own overhead), without and with the SQLite response cache.
(c) achieved throughput / (concurrency / latency) for a server that takes 100 ms per request.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from evalstack.models import GenerateRequest, ResponseCache, load_backend
from tests.support.openai_server import Reply, completion_body, serve


def _run(count: int, concurrency: int, latency: float, cache_dir: Path | None) -> tuple[float, dict[str, Any]]:
    reply_body = completion_body("ok")

    def script(path: str, body: dict[str, Any]) -> Reply:
        return Reply(reply_body, delay=latency)

    requests = [GenerateRequest(prompt=f"sample {i}", max_tokens=8) for i in range(count)]
    with serve(script) as server:
        cache = ResponseCache(cache_dir / "cache.sqlite") if cache_dir else None
        backend = load_backend(f"openai:{server.base_url}?model=bench", cache=cache, max_concurrency=concurrency)
        backend.generate(requests[: concurrency * 2])  # warm the connections and threads
        started = time.perf_counter()
        backend.generate(requests[concurrency * 2 :])
        elapsed = time.perf_counter() - started
        stats = backend.stats()
        backend.close()
        if cache:
            cache.close()
    return (count - concurrency * 2) / elapsed, {
        "requests_sent": stats.requests_sent,
        "retries": stats.retries,
        "concurrency_limit": stats.extra["concurrency_limit"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="requests for the zero-latency run")
    parser.add_argument("--concurrency", type=int, default=8, help="workers for the zero-latency run")
    args = parser.parse_args()

    rate, stats = _run(args.count, args.concurrency, 0.0, None)
    print(f"(a) zero-latency server, concurrency {args.concurrency}, no cache: {rate:,.0f} samples/s  {stats}")
    with tempfile.TemporaryDirectory() as tmp:
        rate, stats = _run(args.count, args.concurrency, 0.0, Path(tmp))
    print(f"(a) zero-latency server, concurrency {args.concurrency}, SQLite cache: {rate:,.0f} samples/s  {stats}")

    concurrency, latency = 32, 0.1
    limit = concurrency / latency
    rate, stats = _run(int(limit * 4) + concurrency * 2, concurrency, latency, None)
    print(
        f"(c) 100 ms server, concurrency {concurrency}: {rate:,.1f} samples/s of a {limit:.0f}/s limit "
        f"= {rate / limit:.3f}  {stats}"
    )


if __name__ == "__main__":
    main()
