"""The embedded local backend: executes SageMaker pipeline definitions on this machine."""

from evalstack.pipeline.local.client import LocalSageMakerClient

__all__ = ["LocalSageMakerClient"]
