"""What /proc says about a process, for tests that check how the local runner started one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_in_instance_folder(
    script: str, folder: Path, modules: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``python -c script <folder>/algo-1`` (the folder made), with ``modules`` (name -> source) written to
    ``folder`` and importable."""
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    root = folder / "algo-1"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", script, str(root)], env=env, capture_output=True, text=True, timeout=timeout
    )


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def parent_command(pid: int) -> str:
    """The command line of ``pid``'s parent process, its arguments joined by spaces."""
    return Path(f"/proc/{parent_pid(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def report_state(arguments: list[str]) -> int:
    """A warm child's ``main``: prints what a cold ``python -m`` process would see, exits with ``arguments[0]``."""
    import json
    import multiprocessing
    import os
    import sys

    state = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "env": os.environ.get("WARM_TEST_VALUE"),
        "start_method": multiprocessing.get_start_method(),
        "process": multiprocessing.current_process().name,
        "stdin": sys.stdin.read(),
    }
    print(json.dumps(state))
    return int(arguments[0])
