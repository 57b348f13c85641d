"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat/completions wire format.

Answers come from a script so every expected score is known exactly. The server records each
request body so tests can count what reached it. Any JSON-over-POST protocol can be scripted the
same way (the SageMaker runtime's InvokeEndpoint and Bedrock's Converse are JSON over REST), and a
reply can misbehave on the wire: a raw (non-JSON) body, a body cut short of its Content-Length, or
a whole answer trickled one byte at a time.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the script returns for one request: a status, a JSON body and headers."""

    body: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (stalls, latency)
    reset: bool = False  # close the connection without answering
    raw: bytes | None = None  # the body as is, instead of ``body`` as JSON
    truncate_at: int | None = None  # send only this many body bytes (Content-Length says all), then close
    trickle: float = 0.0  # seconds between single bytes of the whole answer, status line included
    trickle_body_only: bool = False  # send the status line and headers at once, trickle only the body


Script = Callable[[str, dict[str, Any]], "Reply | str"]


def chat_body(text: str, model: str = "scripted") -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def completion_body(text: str, model: str = "scripted", logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-scripted",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def prompt_of(path: str, body: dict[str, Any]) -> str:
    """The prompt text of a request: the last user message for chat, the prompt for completions."""
    if path.endswith("/chat/completions"):
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        content = users[-1] if users else ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        return content
    prompt = body.get("prompt", "")
    return prompt[0] if isinstance(prompt, list) else prompt


class _LoopbackServer(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when 32+ clients connect at once.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (killed with -9, or gave up on a stall) is expected in fault tests.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class ScriptedOpenAIServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.request_headers: list[dict[str, str]] = []  # same order as requests
        self.stopping = threading.Event()  # ends trickled answers when the server stops
        self.hangups = 0  # trickled answers the client cut off by closing its connection
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append((self.path, body))
                    server.request_headers.append(dict(self.headers))
                reply = server.script(self.path, body)
                if isinstance(reply, str):
                    reply = Reply(
                        chat_body(reply) if self.path.endswith("/chat/completions") else completion_body(reply)
                    )
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                data = reply.raw
                if data is None:
                    data = json.dumps(
                        reply.body if reply.body is not None else {"error": {"message": "scripted"}}
                    ).encode()
                head = [f"HTTP/1.1 {reply.status} Scripted", "Content-Type: application/json"]
                head += [f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in reply.headers.items())]
                wire = ("\r\n".join(head) + "\r\n\r\n").encode() + data
                if reply.truncate_at is not None:
                    self.wfile.write(wire[: len(wire) - len(data) + reply.truncate_at])
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if reply.trickle:
                    start = len(wire) - len(data) if reply.trickle_body_only else 0
                    try:
                        self.wfile.write(wire[:start])
                        for i in range(start, len(wire)):
                            if server.stopping.wait(reply.trickle):
                                break
                            self.wfile.write(wire[i : i + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        with server._lock:
                            server.hangups += 1  # the client gave up and closed the connection
                    self.close_connection = True
                    return
                self.wfile.write(wire)

            def do_GET(self) -> None:
                data = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _LoopbackServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serve(script: Script) -> Iterator[ScriptedOpenAIServer]:
    server = ScriptedOpenAIServer(script).start()
    try:
        yield server
    finally:
        server.stop()
