"""(d) Requests repeated after a kill -9 and resume. Prints figures; not a test.

    python -m bench.resume [--count 600] [--concurrency 16]

A batch runs in a subprocess with the SQLite response cache, is killed with SIGKILL once the
loopback server has answered a third of it, and is run again to completion. Reported: finished
requests sent again (goal 0), in-flight requests sent again (at most the concurrency), and whether
the outputs equal an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from evalstack.models import ResponseCache, cache_key, load_backend
from tests.support.model_batch import CountingCompletions, prompts
from tests.support.openai_server import serve

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.01)
    args = parser.parse_args()
    script = CountingCompletions(latency=args.latency)
    answered = script.answered

    with tempfile.TemporaryDirectory() as tmp, serve(script) as server:
        reference = f"openai:{server.base_url}?model=bench"
        cache_path = Path(tmp) / "cache.sqlite"
        command = [sys.executable, "-m", "tests.support.model_batch", reference, str(cache_path), str(args.count)]
        tail = [str(Path(tmp) / "out.json"), str(args.concurrency)]
        child = subprocess.Popen([*command, *tail], cwd=REPO)
        while sum(answered.values()) < args.count // 3 and child.poll() is None:
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait()
        at_kill = Counter(answered)
        with ResponseCache(cache_path) as cache:
            cached = cache.keys()
        backend = load_backend(reference)
        finished = {
            r.prompt
            for r in prompts(args.count)
            if cache_key(backend.dispatcher.identity, backend.generate_request(r)) in cached
        }
        subprocess.run([*command, *tail], cwd=REPO, check=True)
        outputs = json.loads((Path(tmp) / "out.json").read_text())

    again = {p for p in answered if at_kill[p] and answered[p] > at_kill[p]}
    print(
        f"(d) kill -9 after {sum(at_kill.values())} of {args.count} answered (exit {child.returncode}); "
        f"{len(finished)} responses were in the cache"
    )
    print(f"(d) finished requests sent again after resume: {len(again & finished)}")
    print(f"(d) in-flight requests sent again: {len(again - finished)} (concurrency {args.concurrency})")
    print(f"(d) total requests answered: {sum(answered.values())} for {args.count} samples")
    print(f"(d) outputs equal an uninterrupted run: {outputs == [f'a{i}' for i in range(args.count)]}")


if __name__ == "__main__":
    main()
