"""The warm parent imports in stages: an ``evaluate`` step forks as soon as the modules it uses are imported,
while the parent is still importing the report stack; a ``report`` step waits for that stack; each learns
its exit code even when it ends while the parent is in the middle of an import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from evalstack.pipeline.local import warm
from tests.support.processes import run_in_instance_folder

# Imported by the warm parent between the two stages: blocks until the test creates the file "open".
GATE = """
import pathlib, time
gate = pathlib.Path(__file__).with_name("open")
deadline = time.monotonic() + 30  # then it fails the test rather than hang it
while not gate.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
"""
# The steps' main: what of the preload the forked child has, and whether its collector runs (a cold one's does).
PROBE = """
import gc, json, sys
def main(arguments):
    print(json.dumps({"modules": [m for m in arguments if m in sys.modules], "gc": gc.isenabled()}))
    return 3
"""
SCRIPT = """
import json, os, sys
from pathlib import Path
from evalstack.pipeline.local import warm
import warm_test_probe

warm.PRELOAD = ("warm_test_first", "warm_test_gate", "warm_test_last")
warm.STAGES = {"evaluate": "warm_test_first", "report": "warm_test_last"}
folder = Path(sys.argv[1])

def step(command):
    root = folder / command
    root.mkdir()
    arguments = [command, *warm.PRELOAD]
    proc = warm.WarmProcess(arguments, dict(os.environ), root, root / "output.log", main=warm_test_probe.main)
    code = proc.wait()
    return {"code": code, **json.loads((root / "output.log").read_text())}

evaluate = step("evaluate")  # the parent is held in warm_test_gate's import meanwhile
(folder / "open").touch()
print(json.dumps({"evaluate": evaluate, "report": step("report")}))
"""


def test_evaluate_forks_before_the_report_stack_is_imported_and_report_after(tmp_path: Path) -> None:
    (tmp_path / "warm_test_first.py").write_text("")
    (tmp_path / "warm_test_gate.py").write_text(GATE)
    (tmp_path / "warm_test_last.py").write_text("")
    (tmp_path / "warm_test_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # Forked, ran and reported while the parent was still inside the gate's import: it never waited for it.
    assert seen["evaluate"] == {"code": 3, "modules": ["warm_test_first"], "gc": True}
    assert seen["report"] == {
        "code": 3,
        "modules": ["warm_test_first", "warm_test_gate", "warm_test_last"],
        "gc": True,
    }


def test_stages_name_modules_of_the_preload_in_order() -> None:
    evaluate, report = warm.modules_needed(["evaluate"]), warm.modules_needed(["report"])
    assert 0 < evaluate < report <= len(warm.PRELOAD)
    assert warm.PRELOAD[evaluate - 1] == warm.STAGES["evaluate"]
    assert warm.PRELOAD[report - 1] == warm.STAGES["report"]
    # The report stack comes after everything an evaluation step uses.
    assert "matplotlib.backends.backend_svg" in warm.PRELOAD[evaluate:report]
    assert "evalstack.engine.run" in warm.PRELOAD[:evaluate]
    assert warm.modules_needed(["7"]) == warm.modules_needed([]) == len(warm.PRELOAD)


LOST = """
import os, signal, sys
from pathlib import Path
from evalstack.pipeline.local import warm
from tests.support.processes import parent_pid
import warm_test_probe

root = Path(sys.argv[1])
proc = warm.WarmProcess(["sleep"], dict(os.environ), root, root / "output.log", main=warm_test_probe.sleep)
os.kill(parent_pid(proc.pid), signal.SIGKILL)  # the warm parent dies; its step lives on, orphaned
code = proc.wait()
os.killpg(proc.pid, signal.SIGKILL)
print(code)
"""


def test_a_step_whose_warm_parent_died_ends_with_a_failure_code_not_a_hang(tmp_path: Path) -> None:
    probe = "import time\ndef sleep(arguments):\n    time.sleep(120)\n"
    done = run_in_instance_folder(LOST, tmp_path, {"warm_test_probe": probe}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == warm.EXIT_LOST
