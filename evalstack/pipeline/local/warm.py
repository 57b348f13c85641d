"""Step processes of our own entry point, forked from a warm parent instead of a cold interpreter.

A step container command ``python -m evalstack.pipeline.step ...`` spends most of a small run importing
(numpy, matplotlib, the canonical metric libraries). The runner starts one ``multiprocessing``
forkserver that imports :data:`PRELOAD` once; each instance of such a step is then forked from it.
The child is still its own process, as a cold one is: its own session and process group (stop and
crash recovery signal the group), its own working folder, environment and ``output.log``, and the same
exit code (a traceback goes through the step's masked excepthook, exit 1; ``SystemExit`` codes as the
interpreter gives them; death by a signal is ``-signal``).

A step runs cold when its environment differs from the runner's in anything but the variables the
child sets itself, since a preloaded module may have read the environment when it was imported
(``OPENBLAS_NUM_THREADS``, ``PYTHONHASHSEED``, ...); ``EVALSTACK_LOCAL_WARM_STEPS=0`` runs every step cold.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

WARM_ENV = "EVALSTACK_LOCAL_WARM_STEPS"
ENTRY_MODULE = "evalstack.pipeline.step"
# Variables the child applies itself (streams are written through, as with PYTHONUNBUFFERED=1, which
# every step of our definitions sets; the /opt/ml root is read when a step resolves a container path).
CHILD_ENV = frozenset({"PYTHONUNBUFFERED", "EVALSTACK_OPT_ML_ROOT"})
# What the steps of the README's custom-scorer run import: the entry point, the engine, the report
# (matplotlib, with the SVG backend its plots are saved with) and the light metric libraries. The first
# step waits until these are imported, so the heavy libraries only some runs use are left to the steps
# that use them: scipy.stats (comparisons, the judge), scikit-learn (classification metrics) and the rest
# of nltk (METEOR; ROUGE imports only its stemmer, see evalstack.metrics.light_imports) took three times
# as long to import as everything here, measured, and every run's first step would wait for them
# (docs/performance.md). Not torch or transformers either (BERTScore, local models): their import reads
# HF_* settings. A missing module is skipped; one that raises on import stops the warm parent, and the
# steps then run cold (see the runner).
PRELOAD = (
    ENTRY_MODULE,
    "evalstack.pipeline.local.warm",
    "evalstack.engine.run",
    "evalstack.results.html_report",
    "evalstack.results.plots",
    "matplotlib.backends.backend_svg",
    "evalstack.metrics.registry",
    "evalstack.metrics.rouge",
    "evalstack.metrics.bleu",
)

_lock = threading.Lock()
_context: Any = None


class StepProcess(Protocol):
    """What the runner needs of a step instance process (``subprocess.Popen`` has it)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...


def enabled() -> bool:
    return os.environ.get(WARM_ENV, "1").strip() not in ("0", "false", "no")


def is_entry(command: Sequence[str]) -> bool:
    """Whether ``command`` runs our step entry point with this interpreter (and warm steps are on)."""
    return enabled() and list(command[:3]) == [sys.executable, "-m", ENTRY_MODULE]


def step_arguments(command: Sequence[str], env: Mapping[str, str]) -> list[str] | None:
    """The entry point's arguments when ``command`` can run warm under ``env``, else None."""
    if not is_entry(command):
        return None
    names = (set(env) | set(os.environ)) - CHILD_ENV
    if any(env.get(name) != os.environ.get(name) for name in names):
        return None
    return list(command[3:])


def _forkserver() -> Any:
    global _context
    with _lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _context = context
        return _context


def start_server() -> None:
    """Start the forkserver now, so its imports overlap with the runner's own start. A failure is only
    reported: each step then tries again, and runs cold if the warm parent cannot be reached."""
    _forkserver()
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError as err:
        print(f"warm steps: cannot start the forkserver: {err}", file=sys.stderr, flush=True)


def step_main(arguments: list[str]) -> int:
    """The entry point's ``main``, as ``python -m evalstack.pipeline.step`` runs it."""
    from evalstack.pipeline import step

    sys.argv[0] = step.__file__  # what ``-m`` puts there
    return step.main(arguments)


class WarmProcess:
    """One step instance forked from the warm parent, with the interface of ``subprocess.Popen``.

    ``main`` (a module-level function: it is passed by name) runs in the child with ``arguments``."""

    def __init__(
        self,
        arguments: list[str],
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        main: Callable[[list[str]], int] = step_main,
    ) -> None:
        log.touch()  # the runner reads it even when the child never got to write
        context = _forkserver()
        self._process = context.Process(
            target=_run, args=(main, arguments, dict(env), str(cwd), str(log)), name=f"step-{cwd.name}"
        )
        with _lock:
            self._process.start()
        self.pid: int = self._process.pid
        self._returncode: int | None = None
        self._await_own_group()

    def _await_own_group(self) -> None:
        # Until the child has called setsid, signalling its group would miss it: stop and crash
        # recovery must find the group the moment the pid is recorded.
        while self.poll() is None:
            try:
                if os.getpgid(self.pid) == self.pid:
                    return
            except ProcessLookupError:
                return  # it ended already; poll() has its code
            time.sleep(0.001)

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def poll(self) -> int | None:
        if self._returncode is None:
            code = self._process.exitcode
            if code is not None:
                self._returncode = code
                self._process.close()
        return self._returncode

    def wait(self) -> int:
        if self._returncode is None:
            self._process.join()
        code = self.poll()
        assert code is not None
        return code


def _write_through(fd: int, like: Any) -> io.TextIOWrapper:
    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or "strict"
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=encoding, errors=errors, write_through=True)


def _run(main: Callable[[list[str]], int], arguments: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """The child: become the process ``python -m evalstack.pipeline.step ARGS`` would have been."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = _write_through(1, sys.stdout)
    sys.stderr = _write_through(2, sys.stderr)
    sys.argv = [main.__module__, *arguments]
    sys.path[0] = cwd  # as for ``python -m``: the working folder comes first
    # A main process, not a multiprocessing child: the step's own pools start as a cold process's do.
    multiprocessing.set_start_method(None, force=True)
    multiprocessing.current_process().name = "MainProcess"
    try:
        code = main(arguments)
    except SystemExit:
        raise  # multiprocessing turns its code into the exit code as the interpreter does
    except BaseException:  # noqa: BLE001 - any uncaught error ends a cold interpreter this way too
        sys.excepthook(*sys.exc_info())  # the step's masked traceback, as an uncaught error prints it
        code = 1
    finally:
        atexit._run_exitfuncs()  # what interpreter shutdown runs (temporary folders, log handlers)
    sys.exit(code)
