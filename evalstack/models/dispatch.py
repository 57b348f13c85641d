"""Throughput and resilience shared by every remote backend.

A :class:`Dispatcher` takes wire requests (JSON-able dicts), answers what it can from the
:class:`~evalstack.models.cache.ResponseCache`, and sends the rest through a thread pool whose
in-flight count is bounded by an AIMD limit: it halves on throttling and creeps back up by one
after a full window of successes (TCP-style, so a throttled endpoint is not hammered).
Failed sends are retried with full-jitter exponential backoff, or after Retry-After when the
server names a wait. Backends only say how to send one request; classification of failures
lives here, once.
"""

from __future__ import annotations

import email.utils
import http.client
import math
import random
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evalstack.masking import mask
from evalstack.models.base import BackendStats
from evalstack.models.cache import ResponseCache, cache_key
from evalstack.models.request_timing import RequestTime, record_batch, timed

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 529})
THROTTLE_STATUS = frozenset({429, 529})
# botocore error codes that mean "slow down" / "try again" (Bedrock and SageMaker runtime use these).
THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}
)
TRANSIENT_CODES = frozenset(
    {
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalServerException",
        "InternalServerError",
        "InternalFailure",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


class HTTPStatusError(Exception):
    """A non-2xx HTTP answer; retried when the status is in RETRYABLE_STATUS."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {key.lower(): value for key, value in headers.items()}
        self.body = body
        super().__init__(mask(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}"))


class MalformedResponseError(Exception):
    """A 2xx answer whose body is not the backend's wire shape (empty choices, non-JSON, truncated...).

    Retried like a 5xx, and never cached: the server may answer properly next time.
    """

    def __init__(self, backend: str, problem: str, body: bytes | str, request_id: str | None = None) -> None:
        self.backend = backend
        self.request_id = request_id
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "replace")
        self.body_head = raw[:200]
        super().__init__(
            mask(
                f"{backend}: malformed answer (request id {request_id or 'unknown'}): {problem}; "
                f"body starts {self.body_head.decode('utf-8', 'replace')!r}"
            )
        )


class DeadlineExceededError(TimeoutError):
    """A request that did not complete (connect, first byte and whole body) within its deadline."""


class BatchAbortedError(RuntimeError):
    """A request not retried because another request of its batch already failed."""


class RetriesExhaustedError(RuntimeError):
    """A request still failed after RetryPolicy.max_attempts attempts."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.5  # seconds; attempt n waits uniform(0, min(max_delay, base_delay * 2**n))
    max_delay: float = 30.0
    max_retry_after: float = 300.0  # a server asking for longer than this is capped

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("RetryPolicy delays must be >= 0")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2**attempt)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Failure:
    """How a failed send is handled: retried or not, throttling or not, and any server-named wait."""

    retryable: bool
    throttled: bool = False
    retry_after: float | None = None


def classify(exc: BaseException) -> Failure:
    """Decide whether ``exc`` from a send is worth retrying."""
    if isinstance(exc, HTTPStatusError):
        return Failure(
            retryable=exc.status in RETRYABLE_STATUS,
            throttled=exc.status in THROTTLE_STATUS,
            retry_after=parse_retry_after(exc.headers.get("retry-after")),
        )
    if isinstance(exc, (MalformedResponseError, TimeoutError, socket.timeout, ConnectionError)):
        return Failure(retryable=True)
    if isinstance(exc, http.client.HTTPException):
        return Failure(retryable=True)
    import httpx

    if isinstance(exc, httpx.TransportError):  # connect/read/write/pool timeouts, resets, protocol errors
        return Failure(retryable=True)
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        headers = {k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
        throttled = code in THROTTLE_CODES or status == 429
        return Failure(
            retryable=throttled or code in TRANSIENT_CODES or status >= 500,
            throttled=throttled,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return Failure(retryable=True)
    return Failure(retryable=False)


class AdaptiveConcurrency:
    """An AIMD bound on in-flight requests.

    Throttling halves the limit, but only once per congestion window: a 429 for a request sent
    before the last decrease says nothing new. Each full window of successes (``limit`` of them)
    adds one slot back, up to ``maximum``.
    """

    def __init__(self, maximum: int, minimum: int = 1) -> None:
        if maximum < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {maximum}")
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self._limit = maximum
        self._lowest = maximum
        self._in_flight = 0
        self._epoch = 0
        self._successes = 0
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def lowest(self) -> int:
        return self._lowest

    def acquire(self) -> int:
        """Wait for a slot; returns the window epoch the request is sent in."""
        with self._cond:
            while self._in_flight >= self._limit:
                self._cond.wait()
            self._in_flight += 1
            return self._epoch

    def release(self, *, success: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            if success:
                self._successes += 1
                if self._successes >= self._limit and self._limit < self.maximum:
                    self._limit += 1
                    self._successes = 0
            self._cond.notify_all()

    def throttled(self, epoch: int) -> None:
        with self._cond:
            if epoch != self._epoch:
                return
            self._epoch += 1
            self._successes = 0
            self._limit = max(self.minimum, self._limit // 2)
            self._lowest = min(self._lowest, self._limit)


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = {"requests_sent": 0, "cache_hits": 0, "retries": 0, "throttles": 0, "deduplicated": 0}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.values[name] += amount


Send = Callable[[dict[str, Any]], Any]


class Dispatcher:
    """Cache lookup, deduplication, bounded concurrency and retries for one backend.

    ``identity`` (the model reference without transport options) and each request dict form
    the cache key. Identical requests in one batch are sent once; responses come back in order.
    """

    def __init__(
        self,
        identity: str,
        send: Send,
        *,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> None:
        if deadline is not None and not (math.isfinite(deadline) and deadline > 0):
            raise ValueError(f"deadline: must be a finite number of seconds above 0, got {deadline!r}")
        self.identity = identity
        self._send = send
        self.deadline = deadline
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self.concurrency = AdaptiveConcurrency(max_concurrency)
        self._counters = _Counters()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency.maximum, thread_name_prefix="evalstack-model")
            return self._pool

    def run(self, requests: Sequence[dict[str, Any]]) -> list[Any]:
        keys = [cache_key(self.identity, request) for request in requests]
        first: dict[str, dict[str, Any]] = {}
        for key, request in zip(keys, requests, strict=True):
            first.setdefault(key, request)
        self._counters.add("deduplicated", len(keys) - len(first))
        answers: dict[str, Any] = self.cache.get_many(first) if self.cache is not None else {}
        self._counters.add("cache_hits", len(answers))
        missing = [key for key in first if key not in answers]
        elapsed: dict[str, float] = {}  # per sent request, for the report's slowest samples
        if missing:
            pool = self._executor()
            abort = threading.Event()
            futures: dict[Future[Any], str] = {
                pool.submit(timed, elapsed, key, self._send_one, key, first[key], abort): key for key in missing
            }
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            if any(future.exception() is not None for future in done):
                # Stop the batch, but let calls already on the wire finish (their answers are cached):
                # nothing of this batch may still be sending when the caller retries it.
                abort.set()
                for future in pending:
                    future.cancel()
                wait(pending)
                errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
                raise next((e for e in errors if not isinstance(e, BatchAbortedError)), errors[0])  # type: ignore[misc]
            answers.update((futures[future], future.result()) for future in done)
        record_batch([RequestTime(elapsed.get(key, 0.0), key not in elapsed) for key in keys])
        return [answers[key] for key in keys]

    def _send_one(self, key: str, request: dict[str, Any], abort: threading.Event) -> Any:
        attempt = 0
        while True:
            if abort.is_set():
                raise BatchAbortedError("another request of the batch failed")
            epoch = self.concurrency.acquire()
            self._counters.add("requests_sent")
            try:
                response = self._send(request) if self.deadline is None else self._send_before_deadline(request)
            except Exception as exc:
                self.concurrency.release(success=False)
                failure = classify(exc)
                if failure.throttled:
                    self._counters.add("throttles")
                    self.concurrency.throttled(epoch)
                if not failure.retryable:
                    abort.set()  # before the pool's thread is free to start another request of the batch
                    raise
                attempt += 1
                if attempt >= self.retry.max_attempts:
                    abort.set()
                    raise RetriesExhaustedError(
                        f"{self.identity}: request failed after {attempt} attempts: {exc}"
                    ) from exc
                self._counters.add("retries")
                if abort.wait(self.retry.delay(attempt - 1, failure.retry_after)):
                    raise BatchAbortedError("another request of the batch failed") from exc
                continue
            self.concurrency.release(success=True)
            if self.cache is not None:
                self.cache.put(key, response)
            return response

    def _send_before_deadline(self, request: dict[str, Any]) -> Any:
        """Send on a call thread and stop waiting at the deadline.

        For clients that only bound each socket read (botocore), a server trickling bytes could hold a
        request far past any per-read timeout. The abandoned call ends when the server stops sending
        or at its client's read timeout; its late answer is dropped, so only answers that arrived in
        time are cached. The thread is a daemon so an abandoned call never holds the process at exit.
        """
        future: Future[Any] = Future()

        def call() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self._send(request))
            except BaseException as exc:  # noqa: BLE001 - handed over to the waiting thread, which raises it
                future.set_exception(exc)

        threading.Thread(target=call, name="evalstack-call", daemon=True).start()
        try:
            return future.result(timeout=self.deadline)
        except FutureTimeout:
            raise DeadlineExceededError(
                f"{self.identity}: no complete answer within the {self.deadline:g} s deadline"
            ) from None

    def stats(self) -> BackendStats:
        values = dict(self._counters.values)
        return BackendStats(
            requests_sent=values.pop("requests_sent"),
            cache_hits=values.pop("cache_hits"),
            retries=values.pop("retries"),
            throttles=values.pop("throttles"),
            extra={
                **values,
                "concurrency_limit": self.concurrency.limit,
                "concurrency_lowest": self.concurrency.lowest,
            },
        )

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
