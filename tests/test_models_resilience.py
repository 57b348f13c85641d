"""Retries, throttling, stalls, the response cache and kill -9 resume, against a loopback server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evalstack.models import GenerateRequest, ResponseCache, RetriesExhaustedError, RetryPolicy, cache_key, load_backend
from evalstack.models.dispatch import AdaptiveConcurrency, parse_retry_after
from tests.support.model_batch import CountingCompletions, prompts
from tests.support.openai_server import Reply, serve

REPO = Path(__file__).resolve().parents[1]
FAST = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)


class FaultyScript:
    """Answers ``a<i>`` for prompt ``q<i>``; the first attempt of each prompt fails by ``i % 5``:
    0 -> 429 with Retry-After, 1 -> 500, 2 -> connection reset, 3 -> stall past the client timeout, 4 -> ok.
    ``answered`` counts 200s the client could receive, per request body."""

    def __init__(self, stall: float) -> None:
        self.stall = stall
        self.attempts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        prompt = body["prompt"]
        key = json.dumps(body, sort_keys=True)
        with self.lock:
            self.attempts[prompt] += 1
            first = self.attempts[prompt] == 1
            fault = int(prompt[1:]) % 5 if first else 4
            if fault == 4:
                self.answered[key] += 1
        answer = {"choices": [{"index": 0, "text": "a" + prompt[1:], "finish_reason": "stop"}]}
        if fault == 0:
            return Reply(status=429, headers={"Retry-After": "0"})
        if fault == 1:
            return Reply(status=500)
        if fault == 2:
            return Reply(reset=True)
        if fault == 3:
            return Reply(answer, delay=self.stall)
        return Reply(answer)


def test_every_request_completes_exactly_once_through_throttles_errors_resets_and_stalls() -> None:
    # The client timeout is generous so that a loaded machine never times out a healthy answer (which
    # would be a second answer); a stall outlasts it and ends when the server stops.
    script = FaultyScript(stall=60.0)
    with serve(script) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m&timeout=2", max_concurrency=8, retry=FAST)
        out = backend.generate(prompts(40))
        stats = backend.stats()
    assert out == [f"a{i}" for i in range(40)]
    assert sorted(script.answered.values()) == [1] * 40  # each distinct body answered successfully once
    assert stats.retries == 32 and stats.throttles == 8
    assert stats.requests_sent == 72
    assert stats.extra["concurrency_lowest"] < 8


def test_gives_up_after_max_attempts_and_does_not_retry_client_errors() -> None:
    with serve(lambda path, body: Reply(status=503)) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m", retry=RetryPolicy(max_attempts=3, base_delay=0))
        with pytest.raises(RetriesExhaustedError, match="after 3 attempts"):
            backend.generate([GenerateRequest(prompt="x")])
    assert len(server.requests) == 3
    with serve(lambda path, body: Reply(status=400)) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m", retry=FAST)
        with pytest.raises(Exception, match="HTTP 400"):
            backend.generate([GenerateRequest(prompt="x")])
    assert len(server.requests) == 1


def test_retry_after_is_honoured_in_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert RetryPolicy(max_retry_after=60).delay(0, 120.0) == 60.0
    assert RetryPolicy().delay(3, 2.5) == 2.5
    assert all(0 <= RetryPolicy(base_delay=1, max_delay=4).delay(10, None) <= 4 for _ in range(100))

    waits: list[float] = []
    calls = Counter[str]()

    def script(path: str, body: dict[str, Any]) -> Reply | str:
        calls["n"] += 1
        return Reply(status=429, headers={"Retry-After": "2"}) if calls["n"] == 1 else "ok"

    class Recording(RetryPolicy):
        """Records each wait the dispatcher asks for, and waits none of it."""

        def delay(self, attempt: int, retry_after: float | None) -> float:
            waits.append(super().delay(attempt, retry_after))
            return 0.0

    with serve(script) as server:
        backend = load_backend(f"openai:{server.base_url}?model=m", retry=Recording())
        assert backend.generate([GenerateRequest(prompt="x")]) == ["ok"]
    assert waits == [2.0]


def test_aimd_halves_once_per_window_and_creeps_back() -> None:
    limiter = AdaptiveConcurrency(16)
    epochs = [limiter.acquire() for _ in range(16)]
    for epoch in epochs[:10]:  # ten 429s from one burst: one decrease
        limiter.release(success=False)
        limiter.throttled(epoch)
    assert limiter.limit == 8
    for _ in epochs[10:]:
        limiter.release(success=True)
    assert limiter.limit == 8
    limiter.throttled(limiter.acquire())
    limiter.release(success=False)
    assert limiter.limit == 4 and limiter.lowest == 4
    for _ in range(4 + 5):  # one window of 4 successes -> 5, then 5 more -> 6
        limiter.acquire()
        limiter.release(success=True)
    assert limiter.limit == 6


def test_cache_key_is_canonical_json_of_identity_and_request() -> None:
    assert cache_key("m", {"a": 1, "b": [1, 2]}) == cache_key("m", {"b": [1, 2], "a": 1})
    assert cache_key("m", {"a": 1}) != cache_key("n", {"a": 1})
    a = load_backend("openai:http://127.0.0.1:1/v1?model=x&timeout=5").dispatcher.identity
    b = load_backend("openai:http://127.0.0.1:1/v1?model=x").dispatcher.identity
    assert a == b == "openai:http://127.0.0.1:1/v1?model=x&api=completions&logprobs=auto"


def _body_key(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def test_kill_9_midway_then_resume_repeats_no_finished_request(tmp_path: Path) -> None:
    count, concurrency = 120, 4
    script = CountingCompletions(latency=0.01)
    answered = script.answered

    cache_path = tmp_path / "cache.sqlite"
    with serve(script) as server:
        reference = f"openai:{server.base_url}?model=m"
        command = [sys.executable, "-m", "tests.support.model_batch", reference, str(cache_path), str(count)]
        child = subprocess.Popen([*command, str(tmp_path / "killed.json"), str(concurrency)], cwd=REPO)
        deadline = time.monotonic() + 60
        while sum(answered.values()) < count // 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        assert not (tmp_path / "killed.json").exists()

        with ResponseCache(cache_path) as cache:
            finished = cache.keys()
        backend = load_backend(reference)
        finished_prompts = {
            request.prompt
            for request in prompts(count)
            if cache_key(backend.dispatcher.identity, backend.generate_request(request)) in finished
        }
        assert count // 3 - concurrency <= len(finished_prompts) < count
        before = Counter(answered)

        subprocess.run([*command, str(tmp_path / "resumed.json"), str(concurrency)], cwd=REPO, check=True)
    resent = {prompt for prompt in answered if answered[prompt] > before[prompt] and before[prompt] > 0}
    assert not resent & finished_prompts  # no finished request was sent again
    assert len(resent) <= concurrency  # only what was in flight at the kill
    assert sum(answered.values()) == count + len(resent)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed == [f"a{i}" for i in range(count)]  # what an uninterrupted run gives (the script is pure)
