"""Model backends behind one protocol; :func:`load_backend` turns a model reference into one.

See docs/models.md for the reference format and each backend's wire shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from evalstack.models.base import (
    BackendStats,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelBackend,
)
from evalstack.models.cache import ResponseCache, cache_key, default_cache_path
from evalstack.models.dispatch import RetriesExhaustedError, RetryPolicy
from evalstack.models.model_package import ModelPackageInfo, resolve_model_package
from evalstack.models.reference import ACCEPTED_FORMS, ModelReference, label_error, parse_model_reference

__all__ = [
    "ACCEPTED_FORMS",
    "BackendStats",
    "GenerateRequest",
    "Loglikelihood",
    "LoglikelihoodRequest",
    "ModelBackend",
    "ModelPackageInfo",
    "ModelReference",
    "ResponseCache",
    "RetriesExhaustedError",
    "RetryPolicy",
    "backend_stats",
    "cache_key",
    "cached_backend",
    "load_backend",
    "parse_model_reference",
    "resolve_model_package",
]


def load_backend(
    reference: str,
    *,
    cache: ResponseCache | None = None,
    max_concurrency: int = 8,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    clients: Mapping[str, Any] | None = None,
) -> ModelBackend:
    """Validate ``reference`` and build its backend.

    ``clients`` optionally supplies boto3 clients by service name (``bedrock-runtime``,
    ``sagemaker-runtime``, ``sagemaker`` and ``s3`` for model packages, ``secretsmanager`` for API keys);
    otherwise they are created for the reference's region. A model package ARN loads the
    reference in its ``evalstack:model_reference`` metadata; without that metadata, the model data the
    package declares is fetched (``s3`` client) and served in this process
    (:mod:`evalstack.models.package_serving`), as is a ``jumpstart:`` model's hosting artifact.
    Backends have ``stats()`` and ``close()``.
    """
    parsed = parse_model_reference(reference)
    clients = dict(clients or {})
    remote: dict[str, Any] = {"cache": cache, "max_concurrency": max_concurrency, "retry": retry}
    served = {**remote, "timeout": timeout}  # for an engine the job serves over HTTP (vLLM)
    if parsed.kind == "label":
        raise label_error(parsed)
    if parsed.kind == "openai":
        from evalstack.models.openai_http import OpenAIBackend

        return OpenAIBackend(parsed, timeout=timeout, secrets_client=clients.get("secretsmanager"), **remote)
    if parsed.kind == "bedrock":
        from evalstack.models.bedrock import BedrockBackend

        return BedrockBackend(parsed, client=clients.get("bedrock-runtime"), timeout=timeout, **remote)
    if parsed.kind == "sagemaker":
        from evalstack.models.sagemaker import SageMakerBackend

        return SageMakerBackend(parsed, client=clients.get("sagemaker-runtime"), timeout=timeout, **remote)
    if parsed.kind == "hf":
        from evalstack.models.hf_local import HFBackend

        return HFBackend(parsed)
    if parsed.kind == "jumpstart":
        from evalstack.models.package_serving import serve_jumpstart

        return serve_jumpstart(parsed, _client(clients, "s3", parsed.region), client_options=served)
    client = _client(clients, "sagemaker", parsed.region)
    info = resolve_model_package(parsed.target, client)
    if info.model_reference is None:
        # No metadata naming what serves it: serve what the package itself declares, in this process.
        from evalstack.models.package_serving import serve_model_package

        return serve_model_package(info.arn, client, _client(clients, "s3", parsed.region), client_options=served)
    return load_backend(
        info.model_reference,
        cache=cache,
        max_concurrency=max_concurrency,
        retry=retry,
        timeout=timeout,
        clients=clients,
    )


def _client(clients: Mapping[str, Any], service: str, region: str | None) -> Any:
    if service in clients:
        return clients[service]
    import boto3

    return boto3.client(service, region_name=region)


def backend_stats(backend: ModelBackend) -> BackendStats:
    """Counters of any backend: those with ``stats()`` report them, others report zeros."""
    stats = getattr(backend, "stats", None)
    return stats() if callable(stats) else BackendStats()


@contextmanager
def cached_backend(reference: str, *, max_concurrency: int) -> Iterator[ModelBackend]:
    """A backend on this machine's shared response cache; the backend and the cache close on exit."""
    cache = ResponseCache(default_cache_path())
    try:
        backend = load_backend(reference, cache=cache, max_concurrency=max_concurrency)
        try:
            yield backend
        finally:
            backend.close()
    finally:
        cache.close()
