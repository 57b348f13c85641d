"""OpenAI-compatible HTTP backend (vLLM, TGI, Ollama, llama.cpp server), on stdlib http.client.

Generation uses ``/chat/completions`` or ``/completions`` (``api=``). Log-likelihoods always use
``/completions``:

- ``logprobs=echo``: ``{"prompt": context+continuation, "echo": true, "logprobs": 1, "max_tokens": 1,
  "temperature": 0}``; ``choices[0].logprobs`` holds ``tokens/token_logprobs/top_logprobs/text_offset``
  for the prompt followed by the one generated token (vLLM requires max_tokens >= 1; the generated
  token starts at ``len(prompt)`` and is dropped). Continuation tokens are those that reach past
  ``len(context)`` by ``text_offset``; ``is_greedy`` means every such token is the argmax of its
  ``top_logprobs``.
- ``logprobs=prompt_logprobs`` (vLLM extension): ``{"prompt_logprobs": 1, "return_token_ids": true,
  "max_tokens": 1}``. The wire shape, read from vLLM's source (``vllm/entrypoints/openai/completion/
  protocol.py`` ``CompletionResponseChoice``, ``vllm/logprobs.py`` ``Logprob`` and
  ``append_logprobs_for_next_position``, ``vllm/v1/engine/logprobs.py``): ``choices[0].prompt_logprobs``
  is one entry per prompt token, ``null`` for the first, else an object keyed by token id (a string in
  JSON) -> ``{"logprob", "rank", "decoded_token"}`` holding the actual prompt token (its true vocabulary
  rank, which may be > 1) plus the top-k tokens (ranks 1..k), so with k=1 one or two keys.
  ``choices[0].prompt_token_ids`` (sent back when ``return_token_ids`` is true, vLLM >= 0.10.2; older
  servers ignore the unknown field) names the actual token at each position, as vLLM's own echo path
  looks it up (``step_top_logprobs[token_id]`` in ``completion/serving.py``). Without it the first key
  is taken: vLLM inserts the prompt token first (V0 ``_get_prompt_logprob_if_needed``, V1
  ``append_logprobs_for_next_position``) and JSON keeps that order. The continuation is the shortest
  tail of actual tokens whose ``decoded_token`` texts cover ``len(continuation)`` characters (the same
  character accounting as the echo path's ``text_offset``, which vLLM also derives from
  ``decoded_token``). A token is greedy when no entry at its position has a higher logprob (rank-free,
  as lm-eval's vLLM backend decides ``is_greedy``).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from evalstack.models.base import GenerateRequest, Loglikelihood, LoglikelihoodRequest
from evalstack.models.cache import ResponseCache
from evalstack.models.dispatch import HTTPStatusError, RetryPolicy
from evalstack.models.reference import ModelReference
from evalstack.models.remote import RemoteBackend

DEFAULT_TIMEOUT = 120.0


def resolve_api_key(reference: ModelReference, secrets_client: Any | None = None) -> str | None:
    """The API key from the named environment variable or Secrets Manager secret (never inline).

    A secret's ``SecretString`` is used as is, or its ``api_key`` field when it is a JSON object.
    """
    if reference.api_key_env:
        value = os.environ.get(reference.api_key_env)
        if not value:
            raise ValueError(
                f"model reference {reference.canonical!r}: environment variable {reference.api_key_env} is not set"
            )
        return value
    if reference.api_key_secret:
        if secrets_client is None:
            import boto3

            secrets_client = boto3.client("secretsmanager")
        secret = secrets_client.get_secret_value(SecretId=reference.api_key_secret)["SecretString"]
        try:
            parsed = json.loads(secret)
        except json.JSONDecodeError:
            return secret
        if isinstance(parsed, dict):
            if "api_key" not in parsed:
                raise ValueError(f"secret {reference.api_key_secret!r} is a JSON object without an 'api_key' field")
            return str(parsed["api_key"])
        return secret
    return None


def chat_messages(request: GenerateRequest) -> list[dict[str, str]]:
    turns = request.messages or (("user", request.prompt),)
    return [{"role": role, "content": content} for role, content in turns]


def echo_loglikelihood(logprobs: Mapping[str, Any], context_chars: int, prompt_chars: int) -> Loglikelihood:
    """Sum the continuation's token logprobs from an ``echo`` completion's ``logprobs`` object."""
    tokens = logprobs["tokens"]
    values = logprobs["token_logprobs"]
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    offsets = logprobs["text_offset"]
    total, greedy, count = 0.0, True, 0
    for i, start in enumerate(offsets):
        following = offsets[i + 1] if i + 1 < len(offsets) else float("inf")
        # A token belongs to the continuation if it starts in it or straddles the boundary;
        # tokens at or past the end of the prompt were generated, not echoed.
        if start >= prompt_chars or (start < context_chars and following <= context_chars):
            continue
        if values[i] is None:
            raise ValueError("the server gave no logprob for a continuation token (empty context?)")
        total += float(values[i])
        count += 1
        top = tops[i]
        if not top or max(top, key=top.__getitem__) != tokens[i]:
            greedy = False
    if count == 0:
        raise ValueError("no continuation tokens found in the echoed logprobs (empty continuation?)")
    return Loglikelihood(logprob=total, is_greedy=greedy, num_tokens=count)


def prompt_logprobs_loglikelihood(
    entries: Sequence[Mapping[str, Any] | None], continuation: str, prompt_token_ids: Sequence[int] | None = None
) -> Loglikelihood:
    """Sum the continuation's logprobs from vLLM's ``prompt_logprobs`` list (shape: module docstring)."""
    if prompt_token_ids is not None and len(prompt_token_ids) != len(entries):
        raise ValueError(f"prompt_token_ids has {len(prompt_token_ids)} ids for {len(entries)} prompt_logprobs entries")
    total, greedy, count, covered = 0.0, True, 0, 0
    for position in range(len(entries) - 1, -1, -1):
        if covered >= len(continuation):
            break
        entry = entries[position]
        if not entry:
            raise ValueError("the continuation reaches the first prompt token, which has no logprob")
        actual = _actual_token(entry, position, prompt_token_ids)
        logprob = float(actual["logprob"])
        total += logprob
        greedy = greedy and all(float(other["logprob"]) <= logprob for other in entry.values())
        count += 1
        covered += len(actual.get("decoded_token") or "")
    if count == 0:
        raise ValueError("empty continuation")
    return Loglikelihood(logprob=total, is_greedy=greedy, num_tokens=count)


def _actual_token(entry: Mapping[str, Any], position: int, prompt_token_ids: Sequence[int] | None) -> Mapping[str, Any]:
    if prompt_token_ids is None:
        return next(iter(entry.values()))  # vLLM inserts the prompt token first
    key = str(prompt_token_ids[position])
    if key not in entry:
        raise ValueError(f"prompt_logprobs position {position} lacks the prompt token id {key} (keys {sorted(entry)})")
    return entry[key]


class OpenAIBackend(RemoteBackend):
    def __init__(
        self,
        reference: ModelReference,
        *,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        secrets_client: Any | None = None,
    ) -> None:
        super().__init__(reference, cache=cache, max_concurrency=max_concurrency, retry=retry)
        url = urlsplit(reference.target)
        self._https = url.scheme == "https"
        self._host = url.hostname or ""
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout or reference.timeout or DEFAULT_TIMEOUT
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        api_key = resolve_api_key(reference, secrets_client)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()  # one keep-alive connection per worker thread

    @property
    def supports_loglikelihood(self) -> bool:
        return self.reference.logprobs != "none"

    def generate_request(self, request: GenerateRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.reference.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if self.reference.api == "chat":
            return {"path": "/chat/completions", "body": {**body, "messages": chat_messages(request)}}
        return {"path": "/completions", "body": {**body, "prompt": request.prompt}}

    def generated_text(self, response: Any) -> str:
        choice = response["choices"][0]
        if "message" in choice:
            return choice["message"].get("content") or ""
        return choice.get("text") or ""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        if not self.supports_loglikelihood:
            return super().loglikelihood(requests)
        body = {"model": self.reference.model, "max_tokens": 1, "temperature": 0.0}
        if self.reference.logprobs == "echo":
            body |= {"echo": True, "logprobs": 1}
        else:
            body |= {"prompt_logprobs": 1, "return_token_ids": True}
        wire = [
            {"path": "/completions", "body": {**body, "prompt": request.context + request.continuation}}
            for request in requests
        ]
        results = []
        for request, response in zip(requests, self.dispatcher.run(wire), strict=True):
            choice = response["choices"][0]
            if self.reference.logprobs == "echo":
                if not choice.get("logprobs"):
                    raise ValueError(f"{self.name}: the server returned no echo logprobs; try logprobs=prompt_logprobs")
                prompt_chars = len(request.context) + len(request.continuation)
                results.append(echo_loglikelihood(choice["logprobs"], len(request.context), prompt_chars))
            else:
                if not choice.get("prompt_logprobs"):
                    raise ValueError(f"{self.name}: the server returned no prompt_logprobs; try logprobs=echo")
                results.append(
                    prompt_logprobs_loglikelihood(
                        choice["prompt_logprobs"], request.continuation, choice.get("prompt_token_ids")
                    )
                )
        return results

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            factory = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = factory(self._host, self._port, timeout=self._timeout)
            conn.connect()
            # Small request/response pairs: do not let Nagle hold a segment back waiting for an ACK.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def send(self, request: dict[str, Any]) -> Any:
        conn = self._connection()
        data = json.dumps(request["body"]).encode("utf-8")
        try:
            conn.request("POST", self._prefix + request["path"], body=data, headers=self._headers)
            response = conn.getresponse()
            payload = response.read()
        except BaseException:
            # The connection is in an unknown state (reset, timeout): drop it, the retry reconnects.
            conn.close()
            self._local.conn = None
            raise
        if response.will_close:
            conn.close()
            self._local.conn = None
        if not 200 <= response.status < 300:
            raise HTTPStatusError(response.status, dict(response.getheaders()), payload)
        return json.loads(payload)
