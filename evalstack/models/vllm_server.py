"""vLLM's own OpenAI-compatible server, run on loopback inside the job, behind the OpenAI backend.

:func:`start_server` launches ``python -m vllm.entrypoints.openai.api_server`` (the same server as
``vllm serve``) as a subprocess in a session of its own, on ``127.0.0.1`` and a free port, with the
model folder, a served model name and tensor parallelism over the visible GPUs; its output goes to a
log file. It returns once ``GET /health`` answers 200; a server that exits first, or is not healthy
within the startup timeout (loading weights and capturing CUDA graphs takes minutes for large models),
is stopped and reported with the tail of its log and the log's path.

:class:`VLLMBackend` is :class:`~evalstack.models.openai_http.OpenAIBackend` on that server with
``logprobs=prompt_logprobs`` (vLLM's extension, so log-likelihood benchmarks work) that owns the
server: closing the backend stops it (SIGTERM to its process group, which holds vLLM's worker
processes too; SIGKILL after a grace period), and so does interpreter exit. Generation goes to
``/completions``, or to ``/chat/completions`` for chat turns when the model has a chat template, as
the transformers backend applies one.

The server listens on loopback only and needs no API key: the one client is this process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from evalstack.models.base import GenerateRequest
from evalstack.models.openai_http import OpenAIBackend, chat_messages
from evalstack.models.reference import ModelReference

HOST = "127.0.0.1"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
STARTUP_TIMEOUT = 1800.0  # seconds: a 70B model over 8 GPUs loads and warms up in well under this
STOP_GRACE = 30.0  # seconds vLLM gets to shut its workers down after SIGTERM
HEALTH_POLL = 0.5  # seconds between health checks while the server starts
LOG_TAIL_LINES = 30
# vLLM batches requests continuously: many in flight keep the GPUs busy.
MAX_CONCURRENCY = 32


class VLLMServerError(RuntimeError):
    """The vLLM server exited or did not become healthy; the message holds its log's tail and path."""


def tensor_parallel_size(folder: Path, gpus: int) -> int:
    """The most GPUs, at most ``gpus``, that divide the model's attention heads (vLLM refuses others)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    heads = config.get("num_attention_heads") or config.get("n_head")
    if not isinstance(heads, int) or heads < 1:
        return gpus
    return max(size for size in range(1, gpus + 1) if heads % size == 0)


def server_command(folder: Path, port: int, served_name: str, tensor_parallel: int) -> list[str]:
    """The command line of vLLM's OpenAI-compatible server for ``folder`` (flags as ``vllm serve``'s)."""
    return [
        sys.executable,
        "-m",
        SERVER_MODULE,
        "--model",
        str(folder),
        "--served-model-name",
        served_name,
        "--host",
        HOST,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(tensor_parallel),
        "--disable-uvicorn-access-log",  # one line per request would bury the startup and error lines
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class VLLMServer:
    """A running server process; :meth:`stop` ends it and its workers."""

    process: subprocess.Popen[bytes]
    command: list[str]
    port: int
    log_path: Path
    stopped: bool = False

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "".join(deque(log, maxlen=LOG_TAIL_LINES)).rstrip()
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def wait_healthy(self, timeout: float) -> None:
        """Return when ``GET /health`` answers 200; raise VLLMServerError if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.port}/health"
        with httpx.Client(timeout=httpx.Timeout(5.0), trust_env=False) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise VLLMServerError(self._failure(f"exited with code {code} before it was healthy"))
                if _healthy(client, url):
                    return
                if time.monotonic() >= deadline:
                    raise VLLMServerError(self._failure(f"was not healthy (GET /health) within {timeout:g} s"))
                time.sleep(HEALTH_POLL)

    def _failure(self, what: str) -> str:
        return (
            f"vLLM server ({' '.join(self.command[1:])}) {what}; its log is {self.log_path}, "
            f"last lines:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after a grace period, and return once the group
        is empty (bounded); idempotent."""
        if self.stopped:
            return  # its group id may belong to other processes by now
        atexit.unregister(self.stop)
        group = self.process.pid  # the leader of its own session, so also its process group id
        _signal_group(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # then it is killed below
            self.process.wait(timeout=STOP_GRACE)
        # Workers that outlive the server, and a server that ignored SIGTERM.
        _signal_group(group, signal.SIGKILL)
        self.process.wait()
        # Signals are asynchronous: wait until the workers are gone and their GPU memory is free, so a
        # server started next (the base model's) finds it.
        deadline = time.monotonic() + STOP_GRACE
        while _running_in_group(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stopped = True


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False  # not listening yet: still loading the model


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return  # the group has no processes left


def _running_in_group(group: int) -> bool:
    """Whether a process of ``group`` still runs (Linux /proc; elsewhere nothing is waited for).

    Zombies count as gone: they hold no memory, and orphans wait for PID 1 to reap them, which in a
    container without an init process never happens.
    """
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid, pgrp
        except (OSError, IndexError):
            continue  # exited while listed
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False


def start_server(
    folder: Path,
    served_name: str,
    tensor_parallel: int,
    *,
    log_dir: Path,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> VLLMServer:
    """Launch vLLM's server for ``folder`` and wait until it is healthy (stopped again if it is not)."""
    port = free_port()
    command = server_command(folder, port, served_name, tensor_parallel)
    log_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"vllm-{port}-", suffix=".log", dir=log_dir)
    with os.fdopen(handle, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = VLLMServer(process=process, command=command, port=port, log_path=Path(name))
    atexit.register(server.stop)
    try:
        server.wait_healthy(startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def has_chat_template(folder: Path) -> bool:
    """Whether the model's tokenizer carries a chat template (tokenizer_config.json or its own file)."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


class VLLMBackend(OpenAIBackend):
    """The OpenAI backend on an in-job vLLM server it owns; ``serving`` goes into results.json."""

    def __init__(
        self,
        server: VLLMServer,
        served_name: str,
        *,
        chat: bool,
        serving: dict[str, Any],
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_options``: the OpenAI backend's keyword arguments (cache, max_concurrency, retry,
        timeout) as the caller of ``load_backend`` gave them; ``MAX_CONCURRENCY`` requests when it gave none."""
        reference = ModelReference(
            kind="openai", target=server.base_url, model=served_name, api="completions", logprobs="prompt_logprobs"
        )
        try:
            super().__init__(reference, **{"max_concurrency": MAX_CONCURRENCY, **(client_options or {})})
        except BaseException:
            server.stop()
            raise
        self.server = server
        self.chat = chat
        self.serving = serving

    def serving_details(self) -> dict[str, Any]:
        return dict(self.serving)

    def generate_request(self, request: GenerateRequest) -> dict[str, Any]:
        wire = super().generate_request(request)
        if not (request.messages and self.chat):
            return wire
        body = {key: value for key, value in wire["body"].items() if key != "prompt"}
        return {"path": "/chat/completions", "body": {**body, "messages": chat_messages(request)}}

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.server.stop()


def serve_folder(
    folder: Path,
    served_name: str,
    gpus: int,
    serving: dict[str, Any],
    *,
    log_dir: Path,
    startup_timeout: float = STARTUP_TIMEOUT,
    client_options: Mapping[str, Any] | None = None,
) -> VLLMBackend:
    """A backend on a new vLLM server for ``folder``; ``serving`` gains the GPU count and tensor parallel size."""
    tensor_parallel = tensor_parallel_size(folder, gpus)
    chat = has_chat_template(folder)  # read before the server starts: a bad file fails without one to stop
    server = start_server(folder, served_name, tensor_parallel, log_dir=log_dir, startup_timeout=startup_timeout)
    details = {**serving, "gpus": gpus, "tensor_parallel_size": tensor_parallel}
    return VLLMBackend(server, served_name, chat=chat, serving=details, client_options=client_options)

