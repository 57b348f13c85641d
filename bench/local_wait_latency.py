"""How long after a local execution ends does ``wait()`` return? (issue 13: within 100 ms)

Runs a few tiny custom-scorer evaluations on the local backend in a throwaway EVALSTACK_HOME and
prints, for each, the time between the runner recording the final status (the store's
LastModifiedTime) and wait() returning.

    .venv/bin/python bench/local_wait_latency.py [runs]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["EVALSTACK_HOME"] = str(Path(scratch) / "home")
        os.environ["EVALSTACK_BACKEND"] = "local"
        from evalstack.evaluate import CustomScorerEvaluator

        data = Path(scratch) / "d.jsonl"
        data.write_text("".join(f'{{"prompt": "q{i}", "response": "a", "reference": "a"}}\n' for i in range(12)))
        latencies = []
        for _ in range(runs):
            execution = CustomScorerEvaluator(evaluator="accuracy", dataset=str(data), model="listed").evaluate()
            execution.wait(poll=30)
            returned = time.time()
            latencies.append(returned - execution.last_modified_time.timestamp())
        print("latency after the end (ms):", ", ".join(f"{1000 * x:.0f}" for x in latencies))
        print(f"max {1000 * max(latencies):.0f} ms over {runs} runs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
