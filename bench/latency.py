"""How long small things take (issue 12's goals): the import of the client, `evalstack --help`, and the
README's 40-sample custom-scorer run through the CLI on the local backend, end to end.

Each command runs in a fresh interpreter in a throwaway EVALSTACK_HOME, `runs` times after one untimed
run; the median and the range are printed next to the goal. Bytecode is cached (in a private folder) as
for an installed package, whose .pyc files pip writes at install time: an environment that sets
PYTHONDONTWRITEBYTECODE would otherwise time the compilation of every module of evalstack on each run.
For the evaluation run, where its time went is printed from the execution's own step records: the
client until the execution started, each step, and the client after the last step. The load average is
printed before and after: on a shared machine it says how far the times are from an idle one's.

    .venv/bin/python bench/latency.py [runs]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALSTACK = str(Path(sys.executable).with_name("evalstack"))
RUN = [EVALSTACK, "evaluate", "custom-scorer", "--dataset", "examples/truthfulqa_answers.jsonl", "--metric", "rouge",
       "--model", "m"]  # fmt: skip
CASES = (
    ("import evalstack.evaluate", [sys.executable, "-c", "import evalstack.evaluate"], 0.3),
    ("evalstack --help", [EVALSTACK, "--help"], 0.3),
    ("README custom-scorer run (40 samples, rouge)", RUN, 2.0),
)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, and the epoch times the command started and ended."""
    started, start = time.time(), time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start, started, time.time()


def phases(home: str, started: float, ended: float) -> dict[str, float]:
    """Where the run's time went, from its execution record in ``home``."""
    os.environ["EVALSTACK_HOME"] = home
    os.environ["EVALSTACK_BACKEND"] = "local"
    from evalstack.runtime.execution import EvaluationPipelineExecution

    (execution,) = EvaluationPipelineExecution.get_all()
    created = execution.creation_time.timestamp()
    steps = [s for s in execution.steps() if s.start_time and s.end_time]
    spans = {s.name: (datetime.fromisoformat(s.start_time).timestamp(), datetime.fromisoformat(s.end_time).timestamp())
             for s in steps}  # fmt: skip
    out = {"client until started": created - started}
    for name, (start, end) in sorted(spans.items(), key=lambda item: item[1]):
        out[f"step {name}"] = end - start
    out["client after the last step"] = ended - max(end for _, end in spans.values())
    return out


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(runs: int) -> None:
    print(load())
    print(f"{'case':48} {'median s':>9} {'min s':>7} {'max s':>7} {'goal s':>7}")
    breakdown: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as pycache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=pycache, EVALSTACK_BACKEND="local")
        for name, command, goal in CASES:
            seconds = []
            for attempt in range(runs + 1):
                with tempfile.TemporaryDirectory() as home:
                    wall, started, ended = timed(command, {**env, "EVALSTACK_HOME": home})
                    if attempt == 0:
                        continue  # writes the bytecode cache
                    seconds.append(wall)
                    if command is RUN:
                        for phase, value in phases(home, started, ended).items():
                            breakdown.setdefault(phase, []).append(value)
            print(f"{name:48} {statistics.median(seconds):9.2f} {min(seconds):7.2f} {max(seconds):7.2f} {goal:7.1f}")
    print("\nwhere the README run's time went (median s):")
    for phase, values in breakdown.items():
        print(f"  {phase:46} {statistics.median(values):9.2f}")
    print(load())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
