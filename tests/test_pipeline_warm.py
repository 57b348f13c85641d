"""Step instances forked from the runner's warm parent behave as the cold ``python -m evalstack.pipeline.step``
processes they replace: exit codes, logs, the failure message file, their own process group, stop by signal."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evalstack.pipeline.local import warm
from evalstack.pipeline.local.runner import kill_process_groups
from evalstack.pipeline.local.warm import WarmProcess
from tests.support.processes import parent_command, report_state, run_in_instance_folder

ENTRY = [sys.executable, "-m", "evalstack.pipeline.step"]
SECRET = "sk-" + "A1b2C3d4E5f6G7h8J9k0"


def _start(tmp_path: Path, arguments: list[str]) -> tuple[WarmProcess, Path]:
    root = tmp_path / "algo-1"
    root.mkdir()
    env = {**os.environ, "EVALSTACK_OPT_ML_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    return WarmProcess(arguments, env, root, root / "output.log"), root


def _evaluate_args(spec_uri: Path, output: Path) -> list[str]:
    return ["evaluate", "--eval-type", "custom_scorer", "--role", "candidate", "--spec-uri", str(spec_uri),
            "--output-uri", str(output)]  # fmt: skip


def test_only_our_entry_point_in_the_runners_environment_runs_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "EVALSTACK_OPT_ML_ROOT": "/tmp/x", "PYTHONUNBUFFERED": "1"}
    assert warm.step_arguments([*ENTRY, "report", "--x"], env) == ["report", "--x"]
    assert warm.step_arguments([sys.executable, "-c", "print(1)"], env) is None
    assert warm.step_arguments(["/usr/bin/python3", "-m", "evalstack.pipeline.step"], env) is None
    # A variable a preloaded library may have read at import time: that step starts a cold interpreter.
    assert warm.step_arguments(ENTRY, {**env, "OPENBLAS_NUM_THREADS": "1"}) is None
    monkeypatch.setenv(warm.WARM_ENV, "0")
    assert warm.step_arguments(ENTRY, {**env, warm.WARM_ENV: "0"}) is None


def test_child_sees_what_a_cold_step_process_sees(tmp_path: Path) -> None:
    root = tmp_path / "algo-1"
    root.mkdir()
    # What a cold interpreter would default to, whatever this (test) process has set.
    code = "import multiprocessing; print(multiprocessing.get_start_method())"
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "WARM_TEST_VALUE": "set for this step"}
    proc = WarmProcess(["7", "--flag"], env, root, root / "output.log", main=report_state)
    assert proc.wait() == 7
    state = json.loads((root / "output.log").read_text())
    assert state == {
        "argv": ["7", "--flag"],
        "cwd": str(root),
        "path0": str(root),
        "env": "set for this step",
        "start_method": cold,
        "process": "MainProcess",
        "stdin": "",
    }
    assert multiprocessing.current_process().name == "MainProcess"


def test_usage_error_exits_2_with_argparse_message_in_the_log(tmp_path: Path) -> None:
    proc, root = _start(tmp_path, ["evaluate"])
    assert proc.wait() == 2
    assert proc.poll() == proc.returncode == 2
    log = (root / "output.log").read_text()
    assert "usage: python -m evalstack.pipeline.step evaluate" in log
    assert "the following arguments are required" in log


def test_error_exits_1_with_masked_traceback_and_failure_message(tmp_path: Path) -> None:
    missing = tmp_path / f"token={SECRET}" / "spec.json"
    proc, root = _start(tmp_path, _evaluate_args(missing, tmp_path / "out"))
    assert proc.wait() == 1
    log = (root / "output.log").read_text()
    assert "Traceback (most recent call last)" in log and "FileNotFoundError" in log
    assert SECRET not in log
    # container_path() honoured the child's EVALSTACK_OPT_ML_ROOT: the message SageMaker would report.
    message = (root / "output" / "message").read_text()
    assert message.startswith("FileNotFoundError") and SECRET not in message


def test_step_runs_in_its_own_group_and_stops_by_signal(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)  # reading the spec blocks until a writer opens it: the step stays up
    proc, _ = _start(tmp_path, _evaluate_args(fifo, tmp_path / "out"))
    try:
        assert proc.poll() is None
        assert os.getpgid(proc.pid) == proc.pid  # its own session, as start_new_session gives a cold one
        assert "evalstack.pipeline.local.warm" in parent_command(proc.pid)  # forked from the warm parent
        kill_process_groups([proc.pid])
        assert proc.wait() == -signal.SIGTERM
    finally:
        kill_process_groups([proc.pid], signal.SIGKILL)  # never left waiting on the pipe


FALLBACK = """
import os, subprocess, sys
from pathlib import Path
from evalstack.pipeline.local import warm
from evalstack.pipeline.local.runner import Runner

warm.PRELOAD = ("breaks_on_import",)  # the warm parent dies while it starts
root = Path(sys.argv[1])
proc = Runner._start_instance([sys.executable, "-m", "evalstack.pipeline.step", "evaluate"], dict(os.environ), root)
print(type(proc).__name__, proc.wait())
"""


def test_step_runs_cold_when_the_warm_parent_cannot_start(tmp_path: Path) -> None:
    broken = {"breaks_on_import": "raise RuntimeError('broken on import')\n"}
    done = run_in_instance_folder(FALLBACK, tmp_path, broken, timeout=120)
    assert done.stdout.split() == ["Popen", "2"], done.stderr  # the cold step's own usage error
    assert "starting it cold" in done.stderr
    assert "usage: python -m evalstack.pipeline.step evaluate" in (tmp_path / "algo-1" / "output.log").read_text()


def test_warm_parent_preloads_no_library_only_some_runs_use() -> None:
    # Every run's first step waits for these imports: nltk in full, scipy, scikit-learn and pandas are
    # left to the steps that need them (docs/performance.md), and ROUGE's rouge-score comes without them.
    code = (
        "import importlib, json, sys\n"
        "from evalstack.pipeline.local.warm import PRELOAD\n"
        "for name in PRELOAD: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert {"rouge_score", "matplotlib", "sacrebleu"} <= loaded
    assert loaded.isdisjoint({"nltk", "scipy", "sklearn", "pandas", "torch", "transformers"})
