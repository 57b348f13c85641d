"""Misbehaving servers, for every backend wire format: malformed 200s are retried, never cached.

Each case runs a loopback server speaking one wire format (OpenAI chat, completions, echo logprobs,
vLLM prompt_logprobs; SageMaker runtime InvokeEndpoint for TGI, LMI and JumpStart, through
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME; Bedrock Converse through AWS_ENDPOINT_URL_BEDROCK_RUNTIME) that
answers with a fault until it is cleared: empty choices (or the format's empty answer), a non-JSON
200, a body cut short of its Content-Length, or a whole answer trickled one byte every 0.5 s. Then:

1. the call fails with a retryable error naming the backend, the request id and the body's start
   (the trickle: the whole-request deadline; elapsed time is measured and bounded by timeout + 1 s);
2. nothing was cached;
3. once the fault clears the same backend succeeds, the cache holds exactly one valid answer per
   prompt, and a fresh backend on the same cache answers everything without one request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evalstack.models import (
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ResponseCache,
    RetriesExhaustedError,
    RetryPolicy,
    load_backend,
)
from tests.support.openai_server import Reply, ScriptedOpenAIServer, chat_body, completion_body, serve

TIMEOUT = 2.0
PROMPTS = ("alpha", "beta", "gamma")


def _echo_answer(context: str, continuation: str) -> dict[str, Any]:
    prompt = context + continuation
    logprobs = {
        "tokens": [context, continuation, "X"],
        "token_logprobs": [None, -1.5, -0.25],
        "top_logprobs": [None, {continuation: -1.5}, {"X": -0.25}],
        "text_offset": [0, len(context), len(prompt)],
    }
    return completion_body("X", logprobs=logprobs)


def _prompt_logprobs_answer(continuation: str) -> dict[str, Any]:
    body = completion_body("X")
    body["choices"][0] |= {
        "prompt_logprobs": [None, {"7": {"logprob": -1.5, "rank": 1, "decoded_token": continuation}}],
        "prompt_token_ids": [1, 7],
    }
    return body


def _converse(text: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        "metrics": {"latencyMs": 1},
    }


@dataclass(frozen=True)
class WireFormat:
    name: str
    reference: Callable[[str], str]  # server root URL -> model reference
    prompt: Callable[[dict[str, Any]], str]  # request body -> the prompt it carries
    answer: Callable[[str], Any]  # prompt -> a valid answer body
    empty: Any  # the format's "nothing in it" answer
    loglikelihood: bool = False
    aws: bool = False


def _continuation_of(body: dict[str, Any]) -> str:
    return body["prompt"].split(":", 1)[1]


OPENAI_FORMATS = [
    WireFormat(
        "openai-chat",
        lambda url: f"openai:{url}/v1?model=m&api=chat&logprobs=none",
        lambda body: body["messages"][-1]["content"],
        lambda prompt: chat_body(f"answer to {prompt}"),
        {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
    ),
    WireFormat(
        "openai-completions",
        lambda url: f"openai:{url}/v1?model=m&api=completions&logprobs=none",
        lambda body: body["prompt"],
        lambda prompt: completion_body(f"answer to {prompt}"),
        {"id": "cmpl-1", "object": "text_completion", "choices": []},
    ),
    WireFormat(
        "openai-echo-logprobs",
        lambda url: f"openai:{url}/v1?model=m&logprobs=echo",
        lambda body: body["prompt"],
        lambda prompt: _echo_answer(prompt.split(":", 1)[0] + ":", prompt.split(":", 1)[1]),
        {"id": "cmpl-1", "object": "text_completion", "choices": []},
        loglikelihood=True,
    ),
    WireFormat(
        "vllm-prompt-logprobs",
        lambda url: f"openai:{url}/v1?model=m&logprobs=prompt_logprobs",
        lambda body: body["prompt"],
        lambda prompt: _prompt_logprobs_answer(prompt.split(":", 1)[1]),
        {"id": "cmpl-1", "object": "text_completion", "choices": []},
        loglikelihood=True,
    ),
]
AWS_FORMATS = [
    WireFormat(
        "sagemaker-tgi",
        lambda url: "sagemaker:faulty?format=tgi&region=us-east-1",
        lambda body: body["inputs"],
        lambda prompt: [{"generated_text": f"answer to {prompt}"}],
        [],
        aws=True,
    ),
    WireFormat(
        "sagemaker-lmi",
        lambda url: "sagemaker:faulty?format=lmi&region=us-east-1",
        lambda body: body["inputs"],
        lambda prompt: {"generated_text": f"answer to {prompt}"},
        {},
        aws=True,
    ),
    WireFormat(
        "sagemaker-jumpstart",
        lambda url: "sagemaker:faulty?format=jumpstart&region=us-east-1",
        lambda body: body["messages"][-1]["content"],
        lambda prompt: {"choices": [{"message": {"role": "assistant", "content": f"answer to {prompt}"}}]},
        {"choices": []},
        aws=True,
    ),
    WireFormat(
        "bedrock-converse",
        lambda url: "bedrock:anthropic.claude-3-haiku-20240307-v1:0?region=us-east-1",
        lambda body: body["messages"][-1]["content"][0]["text"],
        lambda prompt: _converse(f"answer to {prompt}"),
        {"output": {}, "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 0, "totalTokens": 1}},
        aws=True,
    ),
]
FORMATS = OPENAI_FORMATS + AWS_FORMATS
FAULTS = ("empty", "non_json", "truncated", "trickle")
# The OpenAI-compatible backend streams the body and cuts it itself at the deadline, closing the connection.
STREAMED_FAULTS = ("trickle_body",)


class FaultyServer:
    """Answers with ``fault`` while it is set; counts the valid answers it gave per prompt."""

    def __init__(self, wire: WireFormat, fault: str) -> None:
        self.wire = wire
        self.fault: str | None = fault
        self.valid_answers: dict[str, int] = {}
        self.requests = 0

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        self.requests += 1
        prompt = self.wire.prompt(body)
        request_id = f"req-{self.requests}"
        headers = {"x-amzn-RequestId": request_id} if self.wire.aws else {"x-request-id": request_id}
        answer = self.wire.answer(prompt)
        if self.fault is None:
            self.valid_answers[prompt] = self.valid_answers.get(prompt, 0) + 1
            return Reply(answer, headers=headers)
        if self.fault == "empty":
            return Reply(self.wire.empty, headers=headers)
        if self.fault == "non_json":
            return Reply(raw=b"<html><body>502 Bad Gateway</body></html>", headers=headers)
        data = json.dumps(answer).encode()
        if self.fault == "truncated":
            return Reply(raw=data, truncate_at=len(data) // 2, headers=headers)
        return Reply(raw=data, trickle=0.5, trickle_body_only=self.fault == "trickle_body", headers=headers)


@pytest.fixture
def aws_endpoints(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def point(url: str) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    return point


@pytest.fixture
def faulty(
    request: pytest.FixtureRequest, aws_endpoints: Callable[[str], None]
) -> Iterator[tuple[WireFormat, FaultyServer, ScriptedOpenAIServer]]:
    wire, fault = request.param
    script = FaultyServer(wire, fault)
    with serve(script) as server:
        root = server.base_url.removesuffix("/v1")
        aws_endpoints(root)
        yield wire, script, server


def _requests(wire: WireFormat) -> list[Any]:
    if wire.loglikelihood:
        return [LoglikelihoodRequest(context=f"{p}:", continuation=" yes") for p in PROMPTS]
    return [GenerateRequest(prompt=p, max_tokens=8) for p in PROMPTS]


def _expected(wire: WireFormat) -> list[Any]:
    if wire.loglikelihood:
        return [Loglikelihood(logprob=-1.5, is_greedy=True, num_tokens=1)] * len(PROMPTS)
    return [f"answer to {p}" for p in PROMPTS]


def _call(backend: Any, wire: WireFormat) -> list[Any]:
    requests = _requests(wire)
    return backend.loglikelihood(requests) if wire.loglikelihood else backend.generate(requests)


def _backend(wire: WireFormat, server: ScriptedOpenAIServer, cache: ResponseCache, attempts: int) -> Any:
    root = server.base_url.removesuffix("/v1")
    retry = RetryPolicy(max_attempts=attempts, base_delay=0.0)
    return load_backend(wire.reference(root), cache=cache, retry=retry, timeout=TIMEOUT, max_concurrency=2)


CASES = [(wire, fault) for wire in FORMATS for fault in FAULTS]
CASES += [(wire, fault) for wire in OPENAI_FORMATS for fault in STREAMED_FAULTS]


@pytest.mark.parametrize("faulty", CASES, ids=[f"{w.name}-{f}" for w, f in CASES], indirect=True)
def test_fault_is_retried_never_cached_and_clears(
    faulty: tuple[WireFormat, FaultyServer, ScriptedOpenAIServer], tmp_path: Path
) -> None:
    wire, script, server = faulty
    cache = ResponseCache(tmp_path / "cache.sqlite")
    trickle = script.fault in ("trickle", "trickle_body")
    backend = _backend(wire, server, cache, attempts=1 if trickle else 2)
    try:
        started = time.monotonic()
        with pytest.raises(RetriesExhaustedError) as caught:
            _call(backend, wire)
        elapsed = time.monotonic() - started
        message = str(caught.value)
        if trickle:
            print(f"{wire.name}: trickled answer cut after {elapsed:.2f} s (timeout {TIMEOUT:g} s)")
            assert "deadline" in message
            assert elapsed < TIMEOUT + 1.0  # the deadline's own bound, not a speed claim
        else:
            assert "malformed answer (request id req-" in message
            assert backend.name in message
            start = {"empty": "body starts '", "non_json": "body starts '<html><body>502 Bad Gateway"}
            assert start.get(script.fault, "body starts '") in message
        assert len(cache) == 0
        if script.fault == "trickle_body":
            # The backend itself closed the cut call's connection (the server's next byte failed),
            # with the backend still open: the call holds no pool slot.
            give_up = time.monotonic() + 30
            while server.hangups == 0 and time.monotonic() < give_up:
                time.sleep(0.05)
            assert server.hangups >= 1

        script.fault = None
        assert _call(backend, wire) == _expected(wire)
    finally:
        backend.close()
    assert len(cache) == len(PROMPTS)
    assert len(script.valid_answers) == len(PROMPTS)
    assert set(script.valid_answers.values()) == {1}  # each prompt answered once

    before = script.requests
    again = _backend(wire, server, cache, attempts=1)
    try:
        assert _call(again, wire) == _expected(wire)
    finally:
        again.close()
    assert script.requests == before  # every prompt answered from the cache: none sent twice
    cache.close()
