"""The part every remote backend shares: a Dispatcher, stats, and generate as build -> run -> parse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalstack.models.base import BackendStats, GenerateRequest, Loglikelihood, LoglikelihoodRequest
from evalstack.models.cache import ResponseCache
from evalstack.models.dispatch import Dispatcher, RetryPolicy
from evalstack.models.reference import ModelReference

DEFAULT_TIMEOUT = 120.0  # seconds a model call may take, from connecting to the last byte of the answer


def no_retry_config(max_concurrency: int, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """botocore config for the AWS backends: botocore's retries off, so only the Dispatcher retries
    (with its backoff and AIMD limit), a connection pool no smaller than the concurrency, and connect
    and per-read timeouts; the Dispatcher's deadline bounds the whole call."""
    from botocore.config import Config

    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, max_concurrency),
        connect_timeout=timeout,
        read_timeout=timeout,
    )


class RemoteBackend:
    """Subclasses say how to build one wire request, send it, and read the text out of the answer."""

    def __init__(
        self,
        reference: ModelReference,
        *,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> None:
        self.reference = reference
        self.dispatcher = Dispatcher(
            reference.identity, self.send, cache=cache, max_concurrency=max_concurrency, retry=retry, deadline=deadline
        )

    @property
    def name(self) -> str:
        return self.reference.canonical

    @property
    def supports_loglikelihood(self) -> bool:
        return False

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        responses = self.dispatcher.run([self.generate_request(request) for request in requests])
        return [self.generated_text(response) for response in responses]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        raise NotImplementedError(f"{self.name} offers no log-likelihoods; score multiple choice generatively instead")

    def stats(self) -> BackendStats:
        return self.dispatcher.stats()

    def close(self) -> None:
        self.dispatcher.close()

    def __enter__(self) -> RemoteBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What a subclass provides.
    def generate_request(self, request: GenerateRequest) -> dict[str, Any]:
        raise NotImplementedError

    def generated_text(self, response: Any) -> str:
        raise NotImplementedError

    def send(self, request: dict[str, Any]) -> Any:
        """Send one wire request; return a JSON-able answer, validated (it is cached as is).

        An answer whose shape is wrong raises MalformedResponseError, so it is retried, never cached.
        """
        raise NotImplementedError


class AwsRuntimeBackend(RemoteBackend):
    """A backend that calls an AWS runtime API (``service``) through a boto3 client."""

    service: str = ""

    def __init__(
        self,
        reference: ModelReference,
        *,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        client: Any | None = None,
        timeout: float | None = None,
    ) -> None:
        timeout = timeout or DEFAULT_TIMEOUT
        super().__init__(reference, cache=cache, max_concurrency=max_concurrency, retry=retry, deadline=timeout)
        if client is None:
            import boto3

            config = no_retry_config(max_concurrency, timeout)
            client = boto3.client(self.service, region_name=reference.region, config=config)
        self.client = client

    def request_id(self, response: Any) -> str | None:
        return (response.get("ResponseMetadata") or {}).get("RequestId") if isinstance(response, dict) else None
