"""OpenAI-compatible backend against the loopback scripted server: chat, completions, log-likelihoods."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest

from evalstack.models import (
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelBackend,
    ResponseCache,
    load_backend,
)
from tests.support.openai_server import Reply, completion_body, prompt_of, serve


def test_chat_sends_messages_and_sampling_parameters() -> None:
    with serve(lambda path, body: f"answer to {prompt_of(path, body)}") as server:
        # logprobs=none: on Python 3.11 a Protocol isinstance check reads supports_loglikelihood, which
        # would probe an auto-mode server for logprobs.
        backend = load_backend(f"openai:{server.base_url}?model=llama3&api=chat&logprobs=none", max_concurrency=2)
        assert isinstance(backend, ModelBackend)
        out = backend.generate(
            [
                GenerateRequest(prompt="hi", max_tokens=5, stop=("\n",)),
                GenerateRequest(
                    prompt="ignored", messages=(("system", "be brief"), ("user", "2+2?")), temperature=0.5, top_p=0.9
                ),
            ]
        )
    assert out == ["answer to hi", "answer to 2+2?"]
    bodies = sorted((body for _, body in server.requests), key=lambda body: len(body["messages"]))
    assert [path for path, _ in server.requests] == ["/v1/chat/completions"] * 2
    assert bodies[0] == {
        "model": "llama3",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": ["\n"],
    }
    assert bodies[1]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    assert (bodies[1]["temperature"], bodies[1]["top_p"]) == (0.5, 0.9)


def test_completions_is_the_default_api_and_keeps_order() -> None:
    with serve(lambda path, body: body["prompt"].upper()) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m", max_concurrency=8)
        prompts = [f"p{i}" for i in range(50)]
        assert backend.generate([GenerateRequest(prompt=p) for p in prompts]) == [p.upper() for p in prompts]
    assert {path for path, _ in server.requests} == {"/v1/completions"}
    assert backend.stats().requests_sent == 50


def test_api_key_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(lambda path, body: "ok") as server:
        reference = f"openai:{server.base_url}?model=m&api_key_env=EVALSTACK_TEST_KEY"
        with pytest.raises(ValueError, match="'EVALSTACK_TEST_KEY', which is not set"):
            load_backend(reference)
        monkeypatch.setenv("EVALSTACK_TEST_KEY", "sk-test")
        backend = load_backend(reference)
        assert backend.generate([GenerateRequest(prompt="x")]) == ["ok"]
        assert "sk-test" not in backend.name
    assert [headers.get("Authorization") for headers in server.request_headers] == ["Bearer sk-test"]


def _echo_logprobs(tokens: list[str], values: list[float | None], tops: list[dict[str, float] | None]) -> dict:
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


# Scripted echo answers: prompt -> (tokens, logprobs, top_logprobs); the last token is the one
# generated token (max_tokens=1), which must be ignored.
ECHO = {
    "Question: sky? Answer: blue": (
        ["Question", ":", " sky", "?", " Answer", ":", " blue", "."],
        [None, -1.0, -2.0, -0.5, -0.25, -0.125, -0.75, -3.0],
        [
            None,
            {":": -1.0},
            {" sky": -2.0},
            {"?": -0.5},
            {" Answer": -0.25},
            {":": -0.125},
            {" blue": -0.75},
            {".": -3.0},
        ],
    ),
    "Question: sky? Answer: green grass": (
        ["Question", ":", " sky", "?", " Answer", ":", " green", " grass", "!"],
        [None, -1.0, -2.0, -0.5, -0.25, -0.125, -4.5, -0.0625, -1.0],
        [
            None,
            {":": -1.0},
            {" sky": -2.0},
            {"?": -0.5},
            {" Answer": -0.25},
            {":": -0.125},
            {" blue": -0.75, " green": -4.5},
            {" grass": -0.0625},
            {"!": -1.0},
        ],
    ),
    # The server merged the boundary into one token ": yes": it straddles the context end and counts.
    "Answer: yes": (["Answer", ": yes", "\n"], [None, -0.3, -9.0], [None, {": yes": -0.3}, {"\n": -9.0}]),
}


def _echo_script(path: str, body: dict[str, Any]) -> Reply:
    assert path == "/v1/completions"
    assert (body["echo"], body["logprobs"], body["max_tokens"], body["temperature"]) == (True, 1, 1, 0.0)
    tokens, values, tops = ECHO[body["prompt"]]
    return Reply(completion_body(body["prompt"] + tokens[-1], logprobs=_echo_logprobs(tokens, values, tops)))


def test_echo_loglikelihood_sums_exactly_the_continuation_tokens() -> None:
    with serve(_echo_script) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m&api=chat&logprobs=echo")
        assert backend.supports_loglikelihood
        scores = backend.loglikelihood(
            [
                LoglikelihoodRequest("Question: sky? Answer:", " blue"),
                LoglikelihoodRequest("Question: sky? Answer:", " green grass"),
                LoglikelihoodRequest("Answer", ": yes"),
                LoglikelihoodRequest("Answer:", " yes"),
            ]
        )
    assert scores == [
        Loglikelihood(logprob=-0.75, is_greedy=True, num_tokens=1),
        Loglikelihood(logprob=-4.5625, is_greedy=False, num_tokens=2),
        Loglikelihood(logprob=-0.3, is_greedy=True, num_tokens=1),
        Loglikelihood(logprob=-0.3, is_greedy=True, num_tokens=1),
    ]
    # The two choices sharing "Question: sky? Answer:" went in one request as a list prompt; the two
    # "Answer: yes" prompts (different contexts) were one identical request, sent once; no probe.
    assert sorted((body["prompt"] for _, body in server.posts), key=str) == [
        "Answer: yes",
        ["Question: sky? Answer: blue", "Question: sky? Answer: green grass"],
    ]


# A non-streamed vLLM completion choice with prompt_logprobs=1 and return_token_ids=true, shaped as
# vLLM serialises CompletionResponseChoice (vllm/entrypoints/openai/completion/protocol.py): per prompt
# position null (first token) or {token id as string: {logprob, rank, decoded_token}}, the actual
# prompt token inserted first with its true vocabulary rank, then the top-1 token with rank 1
# (vllm/logprobs.py append_logprobs_for_next_position); a prompt token that is itself the top-1 token
# appears once. Prompt "A: Paris." = ids A=32, ":"=25, " Paris"=12366, "."=13.
VLLM_PROMPT_TOKEN_IDS = [32, 25, 12366, 13]
VLLM_PROMPT_LOGPROBS = [
    None,
    {
        "25": {"logprob": -1.5, "rank": 3, "decoded_token": ":"},
        "11": {"logprob": -0.2, "rank": 1, "decoded_token": ","},
    },
    {"12366": {"logprob": -0.5, "rank": 1, "decoded_token": " Paris"}},
    {
        "13": {"logprob": -2.0, "rank": 2, "decoded_token": "."},
        "0": {"logprob": -0.1, "rank": 1, "decoded_token": "!"},
    },
]


def _vllm_choice(with_token_ids: bool) -> dict[str, Any]:
    choice = {
        "index": 0,
        "text": " The",
        "logprobs": None,
        "finish_reason": "length",
        "stop_reason": None,
        "token_ids": [578] if with_token_ids else None,
        "prompt_logprobs": VLLM_PROMPT_LOGPROBS,
        "prompt_token_ids": VLLM_PROMPT_TOKEN_IDS if with_token_ids else None,
    }
    return choice


@pytest.mark.parametrize("with_token_ids", [True, False], ids=["prompt_token_ids", "older-vllm-first-key"])
def test_prompt_logprobs_loglikelihood_on_the_vllm_wire_shape(with_token_ids: bool) -> None:
    def script(path: str, body: dict[str, Any]) -> Reply:
        assert path == "/v1/completions"
        assert (body["prompt_logprobs"], body["return_token_ids"], body["max_tokens"], body["prompt"]) == (
            1,
            True,
            1,
            "A: Paris.",
        )
        reply = completion_body(" The")
        reply["choices"] = [_vllm_choice(with_token_ids)]
        return Reply(reply)

    with serve(script) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m&logprobs=prompt_logprobs")
        scores = backend.loglikelihood(
            [
                LoglikelihoodRequest("A:", " Paris."),
                LoglikelihoodRequest("A: Paris", "."),
                LoglikelihoodRequest("A", ": Paris."),
            ]
        )
    # " Paris." = " Paris" (-0.5, greedy) + "." (-2.0, rank 2); ": Paris." adds ":" (-1.5, rank 3).
    assert scores == [Loglikelihood(-2.5, False, 2), Loglikelihood(-2.0, False, 1), Loglikelihood(-4.0, False, 3)]
    assert backend.stats().extra["deduplicated"] == 2


def test_prompt_logprobs_reads_the_entry_named_by_prompt_token_ids() -> None:
    from evalstack.models.openai_http import prompt_logprobs_loglikelihood

    # Only the ids tell the actual token when it is not the first key; its rank may exceed the top-k's.
    entries = [
        None,
        {
            "7": {"logprob": -0.1, "rank": 1, "decoded_token": " no"},
            "9": {"logprob": -3.0, "rank": 4, "decoded_token": " yes"},
        },
    ]
    assert prompt_logprobs_loglikelihood(entries, " yes", [5, 9]) == Loglikelihood(-3.0, False, 1)
    assert prompt_logprobs_loglikelihood(entries, " no", [5, 7]) == Loglikelihood(-0.1, True, 1)
    with pytest.raises(ValueError, match="lacks the prompt token id 8"):
        prompt_logprobs_loglikelihood(entries, " yes", [5, 8])
    with pytest.raises(ValueError, match="1 ids for 2 prompt_logprobs entries"):
        prompt_logprobs_loglikelihood(entries, " yes", [9])


def test_logprobs_none_means_no_loglikelihood() -> None:
    backend = load_backend("openai:http://127.0.0.1:9/v1?model=m&api=chat&logprobs=none")
    assert not backend.supports_loglikelihood
    with pytest.raises(NotImplementedError, match="score multiple choice generatively"):
        backend.loglikelihood([LoglikelihoodRequest("a", "b")])


def test_cache_hits_never_reach_the_server(tmp_path) -> None:
    with serve(lambda path, body: body["prompt"] * 2) as server:
        reference = f"openai:{server.base_url}?model=m"
        requests = [GenerateRequest(prompt=f"p{i}") for i in range(10)]
        with ResponseCache(tmp_path / "cache.sqlite") as cache:
            first = load_backend(reference, cache=cache).generate(requests)
        with ResponseCache(tmp_path / "cache.sqlite") as cache:
            again = load_backend(reference, cache=cache)
            assert again.generate([*requests, GenerateRequest(prompt="new")]) == [*first, "newnew"]
            stats = again.stats()
    assert len(server.requests) == 11
    assert (stats.cache_hits, stats.requests_sent) == (10, 1)
    # A different model name is a different cache identity.
    assert json.loads(json.dumps(first)) == [f"p{i}p{i}" for i in range(10)]


def test_loopback_is_thread_safe_under_many_workers() -> None:
    lock = threading.Lock()
    seen: set[str] = set()

    def script(path: str, body: dict[str, Any]) -> str:
        with lock:
            assert body["prompt"] not in seen
            seen.add(body["prompt"])
        return str(math.prod(int(c) + 1 for c in body["prompt"] if c.isdigit()))

    with serve(script) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m", max_concurrency=16)
        prompts = [f"n{i}" for i in range(200)]
        out = backend.generate([GenerateRequest(prompt=p) for p in prompts])
    assert out == [str(math.prod(int(c) + 1 for c in p if c.isdigit())) for p in prompts]
    assert len(seen) == 200
