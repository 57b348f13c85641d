"""The custom scorer protocol, batch runner, and cloudpickle transport.

A custom scorer is any object with ``score(predictions, ground_truth, metadata=None)``
returning ``{metric name: number}`` for the samples it was given (the reference API's
``CustomScorer``). The engine calls it once per batch; the scorer travels from the user's
process to a pipeline step as a cloudpickle file.
"""

from __future__ import annotations

import importlib.metadata
import math
import numbers
import sys
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import cloudpickle

from evalstack.metrics.result import MetricResult


@runtime_checkable
class CustomScorer(Protocol):
    def score(
        self, predictions: list[str], ground_truth: list[Any], metadata: list[dict[str, Any]] | None = None
    ) -> dict[str, float]: ...


class ScorerError(ValueError):
    """A custom scorer failed, or returned something that is not ``{name: number}``."""


def _check_batch_result(result: Any, batch: int, start: int, stop: int) -> dict[str, float]:
    where = f"batch {batch} (samples {start}-{stop - 1})"
    if not isinstance(result, dict):
        raise ScorerError(f"custom scorer returned {type(result).__name__} for {where}; expected dict[str, float]")
    checked: dict[str, float] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            raise ScorerError(f"custom scorer returned non-string key {key!r} for {where}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ScorerError(
                f"custom scorer returned non-numeric value {value!r} ({type(value).__name__}) "
                f"for key {key!r} in {where}"
            )
        if not math.isfinite(value):
            raise ScorerError(f"custom scorer returned {value!r} for key {key!r} in {where}; scores must be finite")
        checked[key] = float(value)
    return checked


def run_custom_scorer(
    scorer: CustomScorer,
    predictions: Sequence[str],
    references: Sequence[Any],
    metadata: Sequence[dict[str, Any]] | None = None,
    batch_size: int = 8,
) -> MetricResult:
    """Score ``predictions`` against ``references`` batch by batch and combine the batches.

    ``metadata``, when given, holds one dict per sample; each call gets the slice for its
    batch. Each key is combined as the mean of the batch values weighted by batch size:
    for a scorer that returns a per-sample mean (accuracy, mean similarity) that is exactly
    the value it would return on the whole set at once, whatever ``batch_size`` is and
    however small the last batch. Keys missing from some batches are averaged over the
    batches that report them. Counts (e.g. ``sample_count``) are averaged too, not summed.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if metadata is not None and len(metadata) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(metadata)} metadata records")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not callable(getattr(scorer, "score", None)):
        raise ScorerError(f"{type(scorer).__name__} has no score(predictions, ground_truth, metadata) method")
    sums: dict[str, float] = {}
    weights: dict[str, int] = {}
    for batch, start in enumerate(range(0, len(predictions), batch_size)):
        stop = min(start + batch_size, len(predictions))
        try:
            result = scorer.score(
                list(predictions[start:stop]),
                list(references[start:stop]),
                None if metadata is None else list(metadata[start:stop]),
            )
        except Exception as exc:  # any scorer failure becomes one error that says where
            raise ScorerError(
                f"custom scorer {type(scorer).__name__} failed on batch {batch} "
                f"(samples {start}-{stop - 1}): {type(exc).__name__}: {exc}"
            ) from exc
        for key, value in _check_batch_result(result, batch, start, stop).items():
            sums[key] = sums.get(key, 0.0) + value * (stop - start)
            weights[key] = weights.get(key, 0) + (stop - start)
    values = {key: sums[key] / weights[key] for key in sums}
    signature = {
        "custom_scorer": f"{type(scorer).__module__}.{type(scorer).__qualname__}",
        "cloudpickle": importlib.metadata.version("cloudpickle"),
    }
    return MetricResult(values, None, signature)


def dump_scorer(scorer: CustomScorer) -> bytes:
    """Serialise a scorer so a pipeline step without the user's code can load it.

    The module that defines the scorer's class is pickled by value (class body and the
    functions it uses), because it is usually the user's script or notebook module, which
    is not installed where the step runs. Modules it imports go by reference, so they must
    be installed there.
    """
    if not callable(getattr(scorer, "score", None)):
        raise ValueError(f"{type(scorer).__name__} is not a custom scorer: it has no score() method")
    module = sys.modules.get(type(scorer).__module__)
    # __main__ is always pickled by value; a module the user registered already stays registered.
    by_value = (
        module is not None
        and module.__name__ != "__main__"
        and module.__name__ not in cloudpickle.list_registry_pickle_by_value()
    )
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(scorer)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def load_scorer(data: bytes) -> CustomScorer:
    """Inverse of ``dump_scorer``. Only load scorer files you wrote: unpickling runs code."""
    scorer = cloudpickle.loads(data)
    if not isinstance(scorer, CustomScorer):
        raise ValueError(f"scorer file holds a {type(scorer).__name__}, which has no score() method")
    return scorer
