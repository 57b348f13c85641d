"""How long small things take (issue 12's goals): the import of the client, `evalstack --help`, and the
README's 40-sample custom-scorer run through the CLI on the local backend, end to end.

Each command runs in a fresh interpreter in a throwaway EVALSTACK_HOME, `runs` times; the median and the
range are printed next to the goal.

    .venv/bin/python bench/latency.py [runs]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALSTACK = str(Path(sys.executable).with_name("evalstack"))
CASES = (
    ("import evalstack.evaluate", [sys.executable, "-c", "import evalstack.evaluate"], 0.3),
    ("evalstack --help", [EVALSTACK, "--help"], 0.3),
    (
        "README custom-scorer run (40 samples, rouge)",
        [EVALSTACK, "evaluate", "custom-scorer", "--dataset", "examples/truthfulqa_answers.jsonl",
         "--metric", "rouge", "--model", "m"],
        2.0,
    ),
)  # fmt: skip


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(runs: int) -> None:
    print(f"{'case':48} {'median s':>9} {'min s':>7} {'max s':>7} {'goal s':>7}")
    for name, command, goal in CASES:
        seconds = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as home:
                seconds.append(timed(command, {**os.environ, "EVALSTACK_HOME": home, "EVALSTACK_BACKEND": "local"}))
        print(f"{name:48} {statistics.median(seconds):9.2f} {min(seconds):7.2f} {max(seconds):7.2f} {goal:7.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
