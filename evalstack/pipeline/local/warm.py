"""Step processes of our own entry point, forked from a warm parent instead of a cold interpreter.

A step container command ``python -m evalstack.pipeline.step ...`` spends most of a small run importing
(numpy, matplotlib, the canonical metric libraries). The runner starts one warm parent (:func:`serve`:
forked by the runner's entry point before it imports anything else, or else in an interpreter of its
own) that imports :data:`PRELOAD` once, module by module; each instance of such a step is then forked
from it. The imports are staged: an ``evaluate`` step forks as soon as what
it uses is imported, while the parent goes on importing the report stack (matplotlib) that only the
Report step uses, so the first step no longer waits for it (docs/performance.md). The parent checks for
requests between two modules and forks no step in the middle of an import.

The child is still its own process, as a cold one is: its own session and process group (stop and
crash recovery signal the group), its own working folder, environment and ``output.log``, standard
input from /dev/null, and the same exit code (a traceback goes through the step's masked excepthook,
exit 1; ``SystemExit`` codes as the interpreter gives them; death by a signal is ``-signal``). The warm
parent reports each child's exit status to the runner over the request's socket.

A step runs cold when its environment differs from the runner's in anything but the variables the
child sets itself, since a preloaded module may have read the environment when it was imported
(``OPENBLAS_NUM_THREADS``, ``PYTHONHASHSEED``, ...); ``EVALSTACK_LOCAL_WARM_STEPS=0`` runs every step cold.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

WARM_ENV = "EVALSTACK_LOCAL_WARM_STEPS"
ENTRY_MODULE = "evalstack.pipeline.step"
# Variables the child applies itself (streams are written through, as with PYTHONUNBUFFERED=1, which
# every step of our definitions sets; the /opt/ml root is read when a step resolves a container path).
CHILD_ENV = frozenset({"PYTHONUNBUFFERED", "EVALSTACK_OPT_ML_ROOT"})
# What the steps of the README's custom-scorer run import, in the order the warm parent imports it: the
# entry point, the engine and the light metric libraries (what EvaluateModel uses), then the report
# (matplotlib, with the SVG backend its plots are saved with), then the rest. The heavy libraries only
# some runs use are left to the steps that use them: scipy.stats (comparisons, the judge), scikit-learn
# (classification metrics) and the rest of nltk (METEOR; ROUGE imports only its stemmer, see
# evalstack.metrics.light_imports) took three times as long to import as everything here, measured
# (docs/performance.md). Not torch or transformers either (BERTScore, local models): their import reads
# HF_* settings. A missing module is skipped; one that raises on import stops the warm parent, and the
# steps then run cold (see the runner).
PRELOAD = (
    ENTRY_MODULE,
    "evalstack.pipeline.local.warm",
    "evalstack.engine.run",
    "evalstack.metrics.registry",
    "evalstack.metrics.rouge",
    "evalstack.results.html_report",
    "evalstack.results.plots",
    "matplotlib.backends.backend_svg",
    "evalstack.metrics.bleu",
)
# The step commands that fork before the whole of PRELOAD is imported: each once PRELOAD up to and
# including the module named here is. Forking earlier is never wrong (the child imports what it lacks
# itself); it only decides whether a step waits for the parent or imports on its own.
STAGES = {"evaluate": "evalstack.metrics.rouge", "report": "matplotlib.backends.backend_svg"}
# The warm parent's command line: a fresh interpreter, so a runner with threads never forks it.
SERVE = "import sys; from evalstack.pipeline.local.warm import serve; serve(int(sys.argv[1]), sys.argv[2:])"

_INT = struct.Struct("!i")
_SIZE = struct.Struct("!Q")
EXIT_LOST = 255  # the status of a step whose warm parent died before it could report it

_lock = threading.Lock()
_control: socket.socket | None = None
_server: subprocess.Popen[bytes] | None = None


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


def modules_needed(arguments: Sequence[str]) -> int:
    """How many modules of PRELOAD the warm parent imports before it forks the step run with ``arguments``."""
    last = STAGES.get(arguments[0]) if arguments else None
    return PRELOAD.index(last) + 1 if last in PRELOAD else len(PRELOAD)


def _connect() -> socket.socket:
    """The socket requests go to, the warm parent started first unless it runs. OSError when it cannot start."""
    global _control, _server
    with _lock:
        if _control is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                try:
                    _server = subprocess.Popen(
                        [sys.executable, "-c", SERVE, str(theirs.fileno()), *PRELOAD],
                        pass_fds=[theirs.fileno()],
                        stdin=subprocess.DEVNULL,
                    )
                except OSError:
                    ours.close()
                    raise
            _control = ours
        return _control


def start_server() -> None:
    """Start the warm parent now, so its imports overlap with the runner's own start. A failure is only
    reported: each step then tries again, and runs cold if the warm parent cannot be reached."""
    try:
        _connect()
    except OSError as err:
        print(f"warm steps: cannot start the warm parent: {err}", file=sys.stderr, flush=True)


def fork_server() -> None:
    """Start the warm parent as a fork of this process: sooner than a new interpreter, which would start,
    import this module and only then begin with PRELOAD. Only for the runner's entry point, which calls it
    before it has a thread or has imported anything a step should not inherit."""
    global _control
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        ours.close()
        _stdin_from_devnull()  # the runner's input (its execution's ARN) is not for it
        code = 0
        try:
            serve(theirs.detach(), PRELOAD)
        except BaseException:  # noqa: BLE001 - reported, then this process ends: it must not run the runner's code
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    theirs.close()
    with _lock:
        _control = ours


def step_main(arguments: list[str]) -> int:
    """The entry point's ``main``, as ``python -m evalstack.pipeline.step`` runs it."""
    from evalstack.pipeline import step

    sys.argv[0] = step.__file__  # what ``-m`` puts there
    return step.main(arguments)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("the warm parent closed the connection")
        data += chunk
    return data


def _read_int(conn: socket.socket) -> int:
    return _INT.unpack(_read_exactly(conn, _INT.size))[0]


class WarmProcess:
    """One step instance forked from the warm parent, with the interface of ``subprocess.Popen``.

    ``main`` (a module-level function: it is passed by name) runs in the child with ``arguments``.
    OSError or EOFError when the warm parent cannot fork it (it could not start, or died)."""

    def __init__(
        self,
        arguments: list[str],
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        main: Callable[[list[str]], int] = step_main,
    ) -> None:
        log.touch()  # the runner reads it even when the child never got to write
        payload = pickle.dumps((main, arguments, dict(env), str(cwd), str(log)))
        control = _connect()
        self._conn, theirs = socket.socketpair()
        try:
            with theirs, _lock:
                socket.send_fds(control, [_INT.pack(modules_needed(arguments))], [theirs.fileno()])
            # Read by the child once forked: until then the socket's buffer holds it.
            self._conn.sendall(_SIZE.pack(len(payload)) + payload)
            self.pid: int = _read_int(self._conn)
        except BaseException:
            self._conn.close()
            raise
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

    def _collect(self, timeout: float | None) -> None:
        if self._returncode is not None or not select.select([self._conn], [], [], timeout)[0]:
            return
        try:
            self._returncode = _read_int(self._conn)
        except (EOFError, OSError):
            self._returncode = EXIT_LOST
        self._conn.close()

    def poll(self) -> int | None:
        self._collect(0)
        return self._returncode

    def wait(self) -> int:
        while self._returncode is None:
            self._collect(None)
        return self._returncode


# The warm parent ------------------------------------------------------------------------------------


class _Parent:
    """The warm parent's state: the runner's control socket, and one socket per step it forked."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: dict[int, socket.socket] = {}  # pid -> where its exit status goes
        self.exited: dict[int, int] = {}  # exit codes of children not registered yet
        self.waiting: list[tuple[int, socket.socket]] = []  # (modules needed, socket) of requests
        self.tracking = False  # whether the resource tracker the steps share runs

    def reap(self, *_: object) -> None:
        """SIGCHLD: report the exit code of every child that ended."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            conn = self.children.pop(pid, None)
            if conn is None:
                self.exited[pid] = code
            else:
                _report(conn, code)

    def receive_all(self) -> bool:
        """Take every request the runner has sent; False when it has closed the control socket."""
        while select.select([self.control], [], [], 0)[0]:
            data, fds, _, _ = socket.recv_fds(self.control, _INT.size, 1)
            if not data:
                return False
            self.waiting.append((_INT.unpack(data)[0], socket.socket(fileno=fds[0])))
        return True

    def fork_ready(self, loaded: int) -> None:
        ready = [request for request in self.waiting if request[0] <= loaded]
        if ready and not self.tracking:
            # As multiprocessing's forkserver does: the steps' process pools share one resource tracker, a
            # child of this parent, instead of each starting its own that outlives the step in its session.
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
            self.tracking = True
        for request in ready:
            self.waiting.remove(request)  # the requests still waiting are closed in the child
            conn = request[1]
            pid = os.fork()
            if pid == 0:
                self._become_child(conn)
            with contextlib.suppress(OSError):  # the runner gave up on it; its exit is still reaped
                conn.sendall(_INT.pack(pid))
            self.children[pid] = conn
            if pid in self.exited:  # it ended before it was registered
                del self.children[pid]
                _report(conn, self.exited.pop(pid))

    def _become_child(self, conn: socket.socket) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.control.close()
        for other in [*self.children.values(), *(c for _, c in self.waiting)]:
            other.close()
        gc.enable()
        code = 1
        try:
            size = _SIZE.unpack(_read_exactly(conn, _SIZE.size))[0]
            main, arguments, env, cwd, log = pickle.loads(_read_exactly(conn, size))
            conn.close()
            code = _run(main, arguments, env, cwd, log)
        except BaseException:  # noqa: BLE001 - the child must end here, never return into the parent's loop
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing more gets written
                    stream.flush()
            os._exit(code)


def _report(conn: socket.socket, code: int) -> None:
    with contextlib.suppress(OSError):  # the runner is gone or gave up on the step: no one is left to tell
        conn.sendall(_INT.pack(code))
    conn.close()


def serve(control_fd: int, preload: Sequence[str]) -> None:
    """The warm parent: import ``preload`` module by module, and between two modules (then whenever a
    request comes) fork each step whose modules are imported. Ends when the runner closes the control
    socket; exits 1 when a module raises on import (the runner then starts its steps cold)."""
    parent = _Parent(socket.socket(fileno=control_fd))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as multiprocessing's forkserver: a Ctrl-C is for the steps
    signal.signal(signal.SIGCHLD, parent.reap)
    gc.disable()  # nothing imported here is garbage: the collector would only walk it again and again
    loaded = 0
    while parent.receive_all():
        parent.fork_ready(loaded)
        if loaded == len(preload):
            select.select([parent.control], [], [], None)  # until a request comes (or the runner goes)
            continue
        try:
            importlib.import_module(preload[loaded])
        except ImportError as err:
            # Not installed here (as multiprocessing's forkserver, skipped): the steps import it if they use it.
            print(f"warm steps: not preloaded: {preload[loaded]}: {err}", file=sys.stderr, flush=True)
        loaded += 1
        if loaded == len(preload):
            gc.freeze()  # the steps inherit it: their collector never walks the preloaded modules
            gc.enable()


def _stdin_from_devnull() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _write_through(fd: int, like: Any) -> io.TextIOWrapper:
    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or "strict"
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=encoding, errors=errors, write_through=True)


def _exit_code(code: object) -> int:
    """The exit status the interpreter gives ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run(main: Callable[[list[str]], int], arguments: list[str], env: dict[str, str], cwd: str, log: str) -> int:
    """The child: become the process ``python -m evalstack.pipeline.step ARGS`` would have been."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _stdin_from_devnull()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = _write_through(1, sys.stdout)
    sys.stderr = _write_through(2, sys.stderr)
    sys.argv = [main.__module__, *arguments]
    sys.path[0] = cwd  # as for ``python -m``: the working folder comes first
    try:
        code = _exit_code(main(arguments))
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except BaseException:  # noqa: BLE001 - any uncaught error ends a cold interpreter this way too
        sys.excepthook(*sys.exc_info())  # the step's masked traceback, as an uncaught error prints it
        code = 1
    finally:
        atexit._run_exitfuncs()  # what interpreter shutdown runs (temporary folders, log handlers)
    return code
