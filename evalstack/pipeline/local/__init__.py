"""The embedded local backend: executes SageMaker pipeline definitions on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalstack.pipeline.local.client import LocalSageMakerClient

__all__ = ["LocalSageMakerClient"]


def __getattr__(name: str) -> Any:
    # The client loads botocore's service model; the runner and the steps, which import this
    # package, never use it.
    if name == "LocalSageMakerClient":
        from evalstack.pipeline.local.client import LocalSageMakerClient

        return LocalSageMakerClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
