"""A stand-in for ``python -m vllm.entrypoints.openai.api_server``, for tests on machines without a GPU.

It parses the flags evalstack passes as vLLM's parser does (an unknown flag exits with code 2), writes
what it was given to ``$VLLM_STANDIN_RECORD`` (JSON), starts one worker process (as vLLM's tensor
parallel workers, in the server's process group), and serves the tests' toy prompt_logprobs model
(tests/support/openai_server.py) on ``--host``/``--port``, ``GET /health`` included, answering 404 for
any model name but ``--served-model-name`` as vLLM does. ``$VLLM_STANDIN_MODE``: ``serve`` (default),
``exit`` (fails at startup, as on CUDA out of memory) or ``hang`` (never listens).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support.openai_server import Reply, ScriptedOpenAIServer, ToyServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="vllm.entrypoints.openai.api_server")
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--disable-uvicorn-access-log", action="store_true")
    args = parser.parse_args()
    mode = os.environ.get("VLLM_STANDIN_MODE", "serve")
    print(f"INFO stand-in vLLM: model={args.model} port={args.port} mode={mode}", flush=True)
    if mode == "exit":
        print("torch.OutOfMemoryError: CUDA out of memory (stand-in)", file=sys.stderr, flush=True)
        sys.exit(1)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record = {"argv": sys.argv[1:], "args": vars(args), "pid": os.getpid(), "worker_pid": worker.pid}
    Path(os.environ["VLLM_STANDIN_RECORD"]).write_text(json.dumps(record), encoding="utf-8")
    if mode == "hang":
        threading.Event().wait()
    if not (Path(args.model) / "config.json").is_file():
        sys.exit(f"no config.json in {args.model}")
    toy = ToyServer("prompt_logprobs")

    def script(path: str, body: dict[str, Any]) -> Reply | str:
        if body.get("model") != args.served_model_name:
            error = {"object": "error", "message": f"The model `{body.get('model')}` does not exist.", "code": 404}
            return Reply(error, status=404)
        return toy(path, body)

    ScriptedOpenAIServer(script, port=args.port).start()
    print("INFO:     Application startup complete.", flush=True)
    threading.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    main()
