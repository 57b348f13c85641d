"""What /proc says about a process, for tests that check how the local runner started one."""

from __future__ import annotations

from pathlib import Path


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
