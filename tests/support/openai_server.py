"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat/completions wire format.

Answers come from a script so every expected score is known exactly. The server records each
request body so tests can count what reached it (``posts``: each HTTP request; ``requests``: each
prompt, a list prompt being answered prompt by prompt and merged into one choice per prompt with its
``index``, as OpenAI and vLLM answer it). Any JSON-over-POST protocol can be scripted the
same way (the SageMaker runtime's InvokeEndpoint and Bedrock's Converse are JSON over REST), and a
reply can misbehave on the wire: a raw (non-JSON) body, a body cut short of its Content-Length, or
a whole answer trickled one byte at a time.

:class:`ToyServer` scripts three kinds of completions server over one deterministic toy language
model: echo logprobs, vLLM prompt_logprobs, or neither.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import zlib
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


def _as_reply(path: str, reply: Reply | str) -> Reply:
    if isinstance(reply, Reply):
        return reply
    return Reply(chat_body(reply) if path.endswith("/chat/completions") else completion_body(reply))


def _merged(replies: list[Reply]) -> Reply:
    """One answer for a list prompt: each prompt's choice, ``index`` set to the prompt's position.

    A reply that is not a plain 200 with choices (an error status, a fault on the wire, an empty
    answer) stands for the whole request, as a server fails a batch as a whole.
    """
    if len(replies) == 1:
        return replies[0]
    for reply in replies:
        plain = reply.status == 200 and reply.raw is None and not (reply.reset or reply.trickle)
        if not plain or reply.truncate_at is not None or not (reply.body or {}).get("choices"):
            return reply
    choices = [{**(reply.body or {})["choices"][0], "index": index} for index, reply in enumerate(replies)]
    body = {**(replies[0].body or {}), "choices": choices}
    return Reply(body, headers=replies[0].headers, delay=max(reply.delay for reply in replies))


class _LoopbackServer(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when 32+ clients connect at once.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (killed with -9, or gave up on a stall) is expected in fault tests.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class ScriptedOpenAIServer:
    def __init__(self, script: Script, port: int = 0) -> None:
        self.script = script
        # One entry per prompt asked: a list prompt counts once per prompt, as the script answers each.
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.request_headers: list[dict[str, str]] = []  # same order as requests
        self.posts: list[tuple[str, dict[str, Any]]] = []  # each HTTP request as it arrived
        self.split_list_prompts = True  # False: the script gets a list prompt whole and answers it itself
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
                prompts = body.get("prompt") if isinstance(body, dict) else None
                # A list prompt is answered as OpenAI and vLLM do: each prompt alone, one choice per prompt.
                listed = isinstance(prompts, list) and server.split_list_prompts
                split = [{**body, "prompt": p} for p in prompts] if listed else [body]
                with server._lock:
                    server.posts.append((self.path, body))
                    server.requests.extend((self.path, one) for one in split)
                    server.request_headers.extend(dict(self.headers) for _ in split)
                reply = _merged([_as_reply(self.path, server.script(self.path, one)) for one in split])
                if reply.delay and server.stopping.wait(reply.delay):
                    return  # the server is stopping: a stalled reply is never sent
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

        self.httpd = _LoopbackServer(("127.0.0.1", port), Handler)  # port 0: any free one
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


# Toy servers of three kinds for logprob probing and batching tests. They share a deterministic toy
# language model, so every score is known in advance: a word or punctuation mark with the whitespace
# before it is a token, and a token's logprob depends on it and the token before it (a bigram).
_TOY_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
TOY_TOP = " the"  # the top-1 token wherever the prompt's own token is not the greedy one
TOY_GENERATED = "<gen>"


def toy_tokens(text: str) -> list[str]:
    """The toy tokenizer; the tokens join back to ``text``."""
    return _TOY_TOKEN.findall(text)


def toy_token_id(token: str) -> int:
    return zlib.crc32(token.encode()) % 50_000


def toy_logprob(previous: str, token: str) -> float:
    return -((zlib.crc32(f"{previous}\x00{token}".encode()) % 1000) + 1) / 250


def toy_top(previous: str, token: str) -> tuple[str, float]:
    """The top-1 token after ``previous`` where ``token`` came: the token itself one time in four."""
    logprob = toy_logprob(previous, token)
    if token == TOY_TOP or zlib.crc32(f"{token}\x00{previous}".encode()) % 4 == 0:
        return token, logprob
    return TOY_TOP, logprob / 4


def toy_loglikelihood(context: str, continuation: str) -> tuple[float, bool]:
    """(log P(continuation | context), greedy) under the toy model, for a continuation that starts on a
    token boundary (as " answer" after "Answer:" does): lm-eval's split, computed independently."""
    tokens = toy_tokens(context + continuation)
    start = len(toy_tokens(context))
    assert "".join(tokens[:start]) == context, "the continuation must start on a token boundary"
    pairs = list(itertools.pairwise(tokens[start - 1 :]))
    return sum(toy_logprob(p, t) for p, t in pairs), all(toy_top(p, t)[0] == t for p, t in pairs)


def _toy_echo(prompt: str) -> dict[str, Any]:
    tokens = toy_tokens(prompt)
    offsets = [len("".join(tokens[:i])) for i in range(len(tokens))]
    values: list[float | None] = [None]
    tops: list[dict[str, float] | None] = [None]
    for previous, token in itertools.pairwise(tokens):
        top, top_logprob = toy_top(previous, token)
        values.append(toy_logprob(previous, token))
        tops.append({top: top_logprob, token: toy_logprob(previous, token)})
    return {
        "tokens": [*tokens, TOY_GENERATED],
        "token_logprobs": [*values, -0.1],
        "top_logprobs": [*tops, {TOY_GENERATED: -0.1}],
        "text_offset": [*offsets, len(prompt)],
    }


def _toy_prompt_logprobs(prompt: str) -> list[dict[str, Any] | None]:
    tokens = toy_tokens(prompt)
    entries: list[dict[str, Any] | None] = [None]
    for previous, token in itertools.pairwise(tokens):
        top, top_logprob = toy_top(previous, token)
        logprob = toy_logprob(previous, token)
        # vLLM's shape: the prompt token first, with its rank, then the top-1 token (once if the same).
        rank = 1 if top == token else 2
        entry = {str(toy_token_id(token)): {"logprob": logprob, "rank": rank, "decoded_token": token}}
        entry.setdefault(str(toy_token_id(top)), {"logprob": top_logprob, "rank": 1, "decoded_token": top})
        entries.append(entry)
    return entries


class ToyServer:
    """A script for one kind of server: ``echo`` (echo logprobs, as OpenAI's legacy completions),
    ``prompt_logprobs`` (vLLM's extension, no echo logprobs) or ``text`` (neither: plain chat and
    completion text). Fields a kind does not offer are ignored, as such servers ignore them, and
    every text answer is ``answer``. ``answered`` counts the prompts answered per kind of request."""

    def __init__(self, kind: str, answer: str = "A") -> None:
        assert kind in ("echo", "prompt_logprobs", "text"), kind
        self.kind = kind
        self.answer = answer
        self.answered: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            self.answered[what] = self.answered.get(what, 0) + 1

    def __call__(self, path: str, body: dict[str, Any]) -> Reply | str:
        if path.endswith("/chat/completions"):
            self._count("chat")
            return self.answer
        prompt = body["prompt"]
        if self.kind == "echo" and body.get("echo") and body.get("logprobs") is not None:
            self._count("echo")
            return Reply(completion_body(prompt + TOY_GENERATED, logprobs=_toy_echo(prompt)))
        if self.kind == "prompt_logprobs" and body.get("prompt_logprobs") is not None:
            self._count("prompt_logprobs")
            reply = completion_body(TOY_GENERATED)
            reply["choices"][0]["prompt_logprobs"] = _toy_prompt_logprobs(prompt)
            if body.get("return_token_ids"):
                reply["choices"][0]["prompt_token_ids"] = [toy_token_id(t) for t in toy_tokens(prompt)]
            return Reply(reply)
        self._count("text")
        return self.answer
