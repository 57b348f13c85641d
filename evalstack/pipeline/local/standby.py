"""A runner started before its execution exists, so its warm parent's imports overlap the client's own work.

A small run's first step waits for the runner's warm parent to import the step stack (about a second,
see :mod:`evalstack.pipeline.local.warm`), and a command that starts a run spends a good part of that
importing and checking before the execution exists. :func:`start` launches the runner at once, as
``python -m evalstack.pipeline.local --detach --warm --standby LOG``: it starts its warm parent, imports
itself and then waits on its standard input for the ARN of the execution to run. The local client's
``start_pipeline_execution`` hands its new execution to that runner (:func:`hand_over`) when the runner
would have been started exactly so (the same ``EVALSTACK_HOME``, environment and working folder), and
starts one as before otherwise.

A standby runner whose standard input closes without an ARN (its client discarded it, failed its checks
or exited) stops its warm parent and exits. At most one standby runner waits per process.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from evalstack import storage
from evalstack.pipeline.local import warm

# Paths handed to the runner, which starts step processes in scratch folders: relative ones would move.
PATH_ENV_VARS = ("EVALSTACK_HOME", "EVALSTACK_CACHE")


def runner_environment(home: Path) -> dict[str, str]:
    """The environment a runner for executions under ``home`` gets."""
    env = dict(os.environ)
    for name in PATH_ENV_VARS:
        if env.get(name):
            env[name] = str(storage.absolute_path(env[name]))
    env["EVALSTACK_HOME"] = str(home)
    return env


def runner_command(*arguments: str) -> list[str]:
    """The runner's command line: it forks away from its client first (see the package's ``__main__``)."""
    return [sys.executable, "-m", "evalstack.pipeline.local", "--detach", *arguments]


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


@dataclass
class Standby:
    home: Path
    env: dict[str, str]
    cwd: str
    log: Path  # its output until it gets an execution
    created: list[Path]  # folders made for the log, deepest first
    process: subprocess.Popen[bytes]  # the runner's first process; it exits when the runner has forked away

    def close(self) -> None:
        """End the wait (the runner reads the end of its input, stops its warm parent and exits) and
        remove the log and the folders made for it: a command that started no execution leaves nothing."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()
        self.log.unlink(missing_ok=True)
        for folder in self.created:
            if any(folder.iterdir()):
                break  # someone else's files: this folder and its parents stay
            folder.rmdir()


_lock = threading.Lock()
_waiting: Standby | None = None


def start(home: Path) -> None:
    """Start a runner for the next execution this process starts under ``home``, unless one waits already."""
    global _waiting
    with _lock:
        if _waiting is not None:
            if _waiting.home == home:
                return
            _waiting.close()
            _waiting = None
        log = home / "standby" / f"{uuid.uuid4().hex}.log"
        created = _missing_folders(log.parent)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = runner_environment(home)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                runner_command(*(["--warm"] if warm.enabled() else []), "--standby", str(log)),
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _waiting = Standby(home, env, os.getcwd(), log, created, process)


def hand_over(home: Path, arn: str, log: Path) -> bool:
    """Give execution ``arn`` to the runner waiting for ``home``, its output going to ``log`` (a new
    file) from now on. False when none waits, it would not run as a runner started now would, or it
    is gone: then the caller starts a runner itself."""
    global _waiting
    with _lock:
        standby, _waiting = _waiting, None
    if standby is None:
        return False
    try:
        if standby.home != home or standby.env != runner_environment(home) or standby.cwd != os.getcwd():
            return False
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Linked, not replaced: a log that exists belongs to an earlier run of this execution. The
            # runner and its warm parent keep writing to the file, now under its new name.
            os.link(standby.log, log)
        except OSError:
            return False  # that earlier log, or no hard links here: a runner started now writes its own
        assert standby.process.stdin is not None
        try:
            # One write of less than PIPE_BUF bytes: it arrives whole, or fails at once when the runner is gone.
            os.write(standby.process.stdin.fileno(), f"{arn}\n".encode())
        except BrokenPipeError:
            return False
        return True
    finally:
        standby.close()


def discard() -> None:
    """Let the waiting runner, if any, exit (the command that started it will start no execution)."""
    global _waiting
    with _lock:
        standby, _waiting = _waiting, None
    if standby is not None:
        standby.close()


atexit.register(discard)
