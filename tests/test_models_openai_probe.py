"""OpenAI-compatible servers: logprob probing, generative fallback, and shared-context batching.

Three toy server kinds (tests/support/openai_server.py ToyServer) share one deterministic toy
language model, so every log-likelihood is known in advance: ``echo`` (echo logprobs),
``prompt_logprobs`` (vLLM's extension) and ``text`` (neither).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from evalstack.benchmarks.task import BenchmarkTask
from evalstack.models import LoglikelihoodRequest, RetriesExhaustedError, RetryPolicy, load_backend
from evalstack.models.openai_http import (
    PROBE_PROMPT,
    BatchLimits,
    LogprobsProbeError,
    LogprobsUnavailableError,
    OpenAIBackend,
    shared_context_batches,
)
from evalstack.models.reference import parse_model_reference
from tests.support.openai_server import Reply, ToyServer, completion_body, serve, toy_loglikelihood
from tests.support.scripted_benchmarks import benchmark_spec

NO_RETRY = RetryPolicy(max_attempts=1)


def _backend(base_url: str, logprobs: str = "auto", batch: BatchLimits | None = None) -> OpenAIBackend:
    reference = parse_model_reference(f"openai:{base_url}?model=toy&logprobs={logprobs}")
    return OpenAIBackend(reference, max_concurrency=4, retry=NO_RETRY, batch=batch)


def _probes(server: Any) -> list[dict[str, Any]]:
    return [body for _, body in server.posts if body.get("prompt") == PROBE_PROMPT]


EXPECTED_PROBES = {
    "echo": ("echo", [{"echo": True}]),
    "prompt_logprobs": ("prompt_logprobs", [{"echo": True}, {"prompt_logprobs": 1}]),
    "text": ("none", [{"echo": True}, {"prompt_logprobs": 1}]),
}


@pytest.mark.parametrize("kind", ["echo", "prompt_logprobs", "text"])
def test_probe_picks_the_mode_once_per_backend_under_concurrency(kind: str) -> None:
    mode, asked = EXPECTED_PROBES[kind]
    script = ToyServer(kind)

    def slow(path: str, body: dict[str, Any]) -> Reply | str:
        if body.get("prompt") == PROBE_PROMPT:
            threading.Event().wait(0.2)  # keep the probe on the wire while the other threads ask
        return script(path, body)

    with serve(slow) as server, _backend(server.base_url) as backend:
        seen: list[bool] = []
        threads = [threading.Thread(target=lambda: seen.append(backend.supports_loglikelihood)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [mode != "none"] * 8
        if mode != "none":
            requests = [
                LoglikelihoodRequest(f"Question {i}? Answer:", f" choice {j}") for i in range(5) for j in range(3)
            ]
            backend.loglikelihood(requests)
        details = backend.loglikelihood_details()
        probes = _probes(server)

    # One probe per mode tried, in order echo then prompt_logprobs; none per item or per thread.
    assert len(probes) == len(asked)
    for body, fields in zip(probes, asked, strict=True):
        assert fields.items() <= body.items() and body["max_tokens"] == 1
    assert "prompt_logprobs" not in probes[0]
    assert details["logprobs"] == mode and details["logprobs_requested"] == "auto"
    assert details["probe"]["echo"] == ("found" if kind == "echo" else "the answer has no logprobs")
    if kind != "echo":
        assert details["probe"]["prompt_logprobs"] == (
            "found" if mode != "none" else "the answer has no prompt_logprobs"
        )
    if mode != "none":
        assert details["tokenization"] == "server"
        assert len(server.posts) == len(asked) + 5  # one request per shared context


@pytest.mark.parametrize("kind", ["echo", "prompt_logprobs"])
def test_batched_and_unbatched_give_the_same_loglikelihoods_in_fewer_requests(kind: str, benchmark_data: Path) -> None:
    spec = benchmark_spec("ARC", ["easy"], limit=10)
    runs = {}
    for name, batch in (("batched", None), ("unbatched", BatchLimits(max_prompts=1))):
        task = BenchmarkTask(spec, "candidate")
        with serve(ToyServer(kind)) as server, _backend(server.base_url, batch=batch) as backend:
            items = task.items()
            records = task.run(items, backend)
            runs[name] = (records, len(server.posts), len(_probes(server)))
    (batched, batched_posts, probes), (unbatched, unbatched_posts, _) = runs["batched"], runs["unbatched"]

    choices = sum(len(item.data["choices"]) for item in items)
    assert len(items) == 10 and choices >= 30
    # The toy model's own values, computed independently of the backend's split.
    expected = [[toy_loglikelihood(item.data["query"], f" {c}")[0] for c in item.data["choices"]] for item in items]
    assert [r["loglikelihoods"] for r in batched] == [r["loglikelihoods"] for r in unbatched]
    assert [r["loglikelihoods"] for r in batched] == [pytest.approx(e, abs=1e-9) for e in expected]
    assert [r["scores"] for r in batched] == [r["scores"] for r in unbatched]
    assert {r["mode"] for r in batched} == {"loglikelihood"}
    # One request per question (its choices share the context) against one per choice.
    assert batched_posts - probes == 10
    assert unbatched_posts - probes == choices
    agg = BenchmarkTask(spec).aggregate(batched)
    assert agg.details["scoring_mode"] == "loglikelihood"
    assert agg.details["tokenization"]["logprobs"] == kind


def test_mmlu_five_shot_sends_each_questions_choices_together(benchmark_data: Path) -> None:
    spec = benchmark_spec("MMLU", ["anatomy"], limit=3)
    task = BenchmarkTask(spec, "candidate")
    with serve(ToyServer("prompt_logprobs")) as server, _backend(server.base_url, "prompt_logprobs") as backend:
        items = task.items()
        records = task.run(items, backend)
    scored = [body for _, body in server.posts]
    assert len(scored) == 3 and not _probes(server)  # an explicit mode is never probed
    for body in scored:
        assert [p[-2:] for p in body["prompt"]] == [" A", " B", " C", " D"]
        assert len({p[:-2] for p in body["prompt"]}) == 1  # the 5-shot context, shared
    for item, record in zip(items, records, strict=True):
        [context] = [b["prompt"][0][:-2] for b in scored if b["prompt"][0][:-2].endswith(item.data["query"])]
        assert context.count("\nAnswer:") == 6  # five shots and the question
        assert record["loglikelihoods"] == pytest.approx([toy_loglikelihood(context, f" {c}")[0] for c in "ABCD"])


def test_no_logprobs_server_falls_back_to_letters_and_results_say_so(benchmark_data: Path) -> None:
    spec = benchmark_spec("ARC", ["easy"], limit=5)
    task = BenchmarkTask(spec, "candidate")
    script = ToyServer("text", answer="Answer: A")
    with serve(script) as server, _backend(server.base_url) as backend:
        items = task.items()
        records = task.run(items, backend)
    assert len(_probes(server)) == 2
    assert script.answered == {"text": 7}  # two probes, then five lettered questions
    assert [r["mode"] for r in records] == ["generate"] * 5
    assert [r["extracted"]["letter"] for r in records] == ["A"] * 5
    assert [r["scores"]["acc"] for r in records] == [float(item.data["gold"] == 0) for item in items]
    details = task.aggregate(records).details
    assert details["scoring_mode"] == "generate"
    assert details["tokenization"]["logprobs"] == "none"
    assert details["tokenization"]["logprobs_requested"] == "auto"
    assert details["tokenization"]["probe"] == {
        "echo": "the answer has no logprobs",
        "prompt_logprobs": "the answer has no prompt_logprobs",
    }


def test_required_forbids_the_fallback_and_fails_before_scoring(benchmark_data: Path) -> None:
    task = BenchmarkTask(benchmark_spec("ARC", ["easy"], limit=5), "candidate")
    script = ToyServer("text")
    unavailable = pytest.raises(LogprobsUnavailableError, match="neither echo logprobs nor vLLM prompt_logprobs")
    with serve(script) as server, _backend(server.base_url, "required") as backend, unavailable as caught:
        task.run(task.items(), backend)
    assert "logprobs=required forbids scoring multiple choice by answer letter" in str(caught.value)
    assert "echo: the answer has no logprobs" in str(caught.value)
    assert len(server.posts) == 2 == len(_probes(server))  # the probes only: nothing was scored


@pytest.mark.parametrize(
    ("kind", "mode", "field"), [("prompt_logprobs", "echo", "logprobs"), ("echo", "prompt_logprobs", "prompt_logprobs")]
)
def test_an_explicit_mode_is_not_probed_and_fails_at_once_when_absent(kind: str, mode: str, field: str) -> None:
    with serve(ToyServer(kind)) as server:
        reference = f"openai:{server.base_url}?model=toy&logprobs={mode}"
        backend = load_backend(reference, retry=RetryPolicy(max_attempts=5, base_delay=0.0))
        assert backend.supports_loglikelihood  # as named: no probe
        with pytest.raises(LogprobsUnavailableError, match=f"answered without {field}, so it offers no {mode}"):
            backend.loglikelihood([LoglikelihoodRequest("Answer:", " yes")])
        backend.close()
    assert len(server.posts) == 1  # not retried: absence is the server's answer, not a fault
    assert not _probes(server)


@pytest.mark.parametrize("failure", ["404", "500", "down"])
def test_a_failing_probe_is_an_error_not_absence(failure: str) -> None:
    def script(path: str, body: dict[str, Any]) -> Reply:
        return Reply({"error": {"message": "no such route"}}, status=int(failure))

    # "down": a port bound but not listening refuses connections, and nothing else can take it meanwhile.
    with serve(script) as server, socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{unused.getsockname()[1]}/v1"
        backend = _backend(down if failure == "down" else server.base_url)
        with pytest.raises(LogprobsProbeError, match="probing POST /completions for echo logprobs failed") as caught:
            backend.supports_loglikelihood  # noqa: B018 - the property probes
        backend.close()
    expected_cause = {"404": "HTTP 404", "500": "HTTP 500", "down": "failed after 1 attempts"}[failure]
    assert expected_cause in str(caught.value)
    assert "says nothing about logprobs" in str(caught.value)
    assert len(server.posts) == (0 if failure == "down" else 1)


def test_batch_limits_split_a_context_by_count_and_characters() -> None:
    requests = [LoglikelihoodRequest("Q: pick one. A:", f" option {i}") for i in range(5)]
    requests.append(LoglikelihoodRequest("Q: pick one. A:", " option 0"))  # a repeat is asked once
    requests.append(LoglikelihoodRequest("Other:", " x"))
    by_count = shared_context_batches(requests, BatchLimits(max_prompts=2))
    assert [len(b) for b in by_count] == [2, 2, 1, 1]
    prompt_chars = len("Q: pick one. A: option 0")
    by_chars = shared_context_batches(requests, BatchLimits(max_chars=3 * prompt_chars))
    assert [len(b) for b in by_chars] == [3, 2, 1]
    assert by_chars[0][0] == "Q: pick one. A: option 0" and by_chars[2] == ["Other: x"]
    one_long = shared_context_batches([LoglikelihoodRequest("x" * 50, " y")], BatchLimits(max_chars=10))
    assert one_long == [["x" * 50 + " y"]]  # a prompt over the limit still goes, alone


def test_choices_are_matched_to_prompts_by_index() -> None:
    toy = ToyServer("prompt_logprobs")

    def reversed_choices(path: str, body: dict[str, Any]) -> Reply:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for index, prompt in enumerate(prompts):
            reply = toy(path, {**body, "prompt": prompt})
            assert isinstance(reply, Reply)
            choices.append({**reply.body["choices"][0], "index": index})
        return Reply({**completion_body(""), "choices": choices[::-1]})  # listed last prompt first

    requests = [LoglikelihoodRequest("Colour of the sky:", f" {c}") for c in ("blue", "green", "red")]
    with serve(reversed_choices) as server, _backend(server.base_url, "prompt_logprobs") as backend:
        scores = backend.loglikelihood(requests)
    assert len(server.posts) == 1
    assert [s.logprob for s in scores] == [toy_loglikelihood(r.context, r.continuation)[0] for r in requests]
    assert len({s.logprob for s in scores}) == 3


@pytest.mark.parametrize(
    ("indexes", "problem"),
    [([0, 0], r"index values \[0, 0\] are not 0..1"), ([0], "2 prompts were sent but 1 choices came back")],
)
def test_a_batched_answer_with_wrong_indexes_is_malformed(indexes: list[int], problem: str) -> None:
    toy = ToyServer("prompt_logprobs")

    def script(path: str, body: dict[str, Any]) -> Reply:
        reply = toy(path, {**body, "prompt": body["prompt"][0]})
        assert isinstance(reply, Reply)
        return Reply({**completion_body(""), "choices": [{**reply.body["choices"][0], "index": i} for i in indexes]})

    # The loopback server splits list prompts for ordinary scripts; this one answers the list itself.
    with serve(script) as server:
        server.split_list_prompts = False
        backend = _backend(server.base_url, "prompt_logprobs")
        with pytest.raises(RetriesExhaustedError, match=f"malformed answer .*{problem}"):
            backend.loglikelihood([LoglikelihoodRequest("Q:", " a"), LoglikelihoodRequest("Q:", " b")])
        backend.close()


def test_each_request_gets_its_share_of_its_batched_request_time() -> None:
    from evalstack.models.request_timing import collecting

    requests = [LoglikelihoodRequest("Sky:", f" {c}") for c in ("blue", "grey", "red", "green")]
    requests.append(LoglikelihoodRequest("Grass:", " green"))

    with serve(ToyServer("echo")) as server, _backend(server.base_url, "echo") as backend, collecting() as batches:
        backend.loglikelihood(requests)
    assert len(server.posts) == 2
    [times] = batches  # one entry per request, in request order, for the report's per-sample times
    assert len(times) == 5 and not any(t.cached for t in times)
    assert len({t.seconds for t in times[:4]}) == 1  # the four choices split their request's time evenly
    assert all(t.seconds > 0 for t in times)


def test_a_cached_probe_is_not_sent_again(tmp_path: Path) -> None:
    from evalstack.models import ResponseCache

    with serve(ToyServer("prompt_logprobs")) as server, ResponseCache(tmp_path / "cache.sqlite") as cache:
        for _ in range(2):
            reference = parse_model_reference(f"openai:{server.base_url}?model=toy")
            with OpenAIBackend(reference, cache=cache, retry=NO_RETRY) as backend:
                assert backend.logprobs_mode == "prompt_logprobs"
    assert len(server.posts) == 2  # the first backend's two probes; the second read them from the cache
