"""The custom scorer protocol, how its results combine, and the cloudpickle transport.

A custom scorer is any object with ``score(predictions, ground_truth, metadata=None)`` returning
``{metric name: value}`` (the reference API's ``CustomScorer``). Its results combine exactly, in one
of three ways, so a count, an F1 or a corpus score means the same as on the whole dataset:

1. ``score()`` returns one value per sample (``{"exact": [1, 0, ...]}``): it is called batch by batch
   (streamed), each metric is the mean over every sample, and per-sample values go to samples.jsonl.
2. The scorer has ``aggregate(batch_results)``: it is called batch by batch and ``aggregate`` gets the
   list of its batch results, in order, and returns the final ``{name: number}`` (e.g. summed counts
   and an F1 computed from them).
3. Neither: ``score()`` is called once with the whole dataset when it has at most
   ``WHOLE_DATASET_SAMPLES`` samples; a bigger dataset is an error that says how to make the scorer
   streamable (1 or 2). Batch values are never averaged: a mean of batch F1s is not an F1, and a
   mean of counts is not a count.

An optional ``primary_metric`` attribute names the metric the headline (``score``, the comparison's
``improvement``) reads. The scorer travels from the user's process to a pipeline step as a
cloudpickle file.
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

# A scorer that neither returns per-sample values nor aggregates its batches sees every sample in one
# call; past this many that call would hold too much at once, so it must be made streamable.
WHOLE_DATASET_SAMPLES = 100_000


@runtime_checkable
class CustomScorer(Protocol):
    def score(
        self, predictions: list[str], ground_truth: list[Any], metadata: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]: ...


class ScorerError(ValueError):
    """A custom scorer failed, or returned something that is not ``{name: number or per-sample list}``."""


def _finite(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ScorerError(
            f"custom scorer returned non-numeric value {value!r} ({type(value).__name__}) for key {key!r} in {where}"
        )
    if not math.isfinite(value):
        raise ScorerError(f"custom scorer returned {value!r} for key {key!r} in {where}; scores must be finite")
    return float(value)


def _checked(result: Any, where: str, size: int) -> dict[str, float | list[float]]:
    """``{name: number}`` or ``{name: [one number per sample]}``, validated."""
    if not isinstance(result, dict):
        raise ScorerError(f"custom scorer returned {type(result).__name__} for {where}; expected a dict")
    checked: dict[str, float | list[float]] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            raise ScorerError(f"custom scorer returned non-string key {key!r} for {where}")
        if isinstance(value, list | tuple):
            if len(value) != size:
                raise ScorerError(
                    f"custom scorer returned {len(value)} values for key {key!r} in {where}; "
                    f"a per-sample list needs one value per sample ({size})"
                )
            checked[key] = [_finite(v, key, where) for v in value]
        else:
            checked[key] = _finite(value, key, where)
    return checked


def _call(
    scorer: CustomScorer, start: int, stop: int, args: tuple[Sequence[Any], ...], batch: int | None
) -> tuple[Any, str]:
    """The scorer's raw result for samples ``start:stop``, and how to name them in messages."""
    predictions, references, metadata = args
    where = f"samples {start}-{stop - 1}" if batch is None else f"batch {batch} (samples {start}-{stop - 1})"
    try:
        return scorer.score(
            list(predictions[start:stop]),
            list(references[start:stop]),
            None if metadata is None else list(metadata[start:stop]),
        ), where
    except Exception as exc:  # any scorer failure becomes one error that says where
        name = type(scorer).__name__
        raise ScorerError(f"custom scorer {name} failed on {where}: {type(exc).__name__}: {exc}") from exc


def _not_streamable(scorer: CustomScorer, n: int, where: str, keys: list[str]) -> ScorerError:
    return ScorerError(
        f"custom scorer {type(scorer).__name__} returned one value for {keys} in {where}, and the dataset has "
        f"{n} samples, more than the {WHOLE_DATASET_SAMPLES} it can be given at once. Make it streamable: "
        "return one value per sample (a list) for mean metrics, or add an aggregate(batch_results) method "
        "that combines its batch results (e.g. sums counts and computes F1 from them)"
    )


def run_custom_scorer(
    scorer: CustomScorer,
    predictions: Sequence[str],
    references: Sequence[Any],
    metadata: Sequence[dict[str, Any]] | None = None,
    batch_size: int = 8,
) -> MetricResult:
    """Score ``predictions`` against ``references`` as the module docstring describes.

    ``metadata``, when given, holds one dict per sample; each call gets the slice for its samples.
    ``batch_size`` is the batch of the streamed ways (1 and 2).
    """
    n = len(predictions)
    if n != len(references):
        raise ValueError(f"{n} predictions but {len(references)} references")
    if metadata is not None and len(metadata) != n:
        raise ValueError(f"{n} predictions but {len(metadata)} metadata records")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not callable(getattr(scorer, "score", None)):
        raise ScorerError(f"{type(scorer).__name__} has no score(predictions, ground_truth, metadata) method")
    args = (predictions, references, metadata)
    aggregate = getattr(scorer, "aggregate", None)
    if callable(aggregate):
        values = _aggregated(scorer, aggregate, args, n, batch_size)
        per_sample = None
    elif n <= WHOLE_DATASET_SAMPLES:
        result, where = _call(scorer, 0, n, args, None)
        values, per_sample = _combine([_checked(result, where, n)], n)
    else:
        batches = []
        for batch, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            result, where = _call(scorer, start, stop, args, batch)
            checked = _checked(result, where, stop - start)
            single = [k for k, v in checked.items() if not isinstance(v, list)]
            if single:
                raise _not_streamable(scorer, n, where, single)
            batches.append(checked)
        values, per_sample = _combine(batches, n)
    signature = {
        "custom_scorer": f"{type(scorer).__module__}.{type(scorer).__qualname__}",
        "cloudpickle": importlib.metadata.version("cloudpickle"),
    }
    return MetricResult(values, per_sample, signature)


def _aggregated(
    scorer: CustomScorer, aggregate: Any, args: tuple[Sequence[Any], ...], n: int, batch_size: int
) -> dict[str, float]:
    batch_results = []
    for batch, start in enumerate(range(0, n, batch_size)):
        stop = min(start + batch_size, n)
        result, where = _call(scorer, start, stop, args, batch)
        batch_results.append(_checked(result, where, stop - start))
    try:
        combined = aggregate(batch_results)
    except Exception as exc:  # as for score(): one error that says which call failed
        name = type(scorer).__name__
        raise ScorerError(f"custom scorer {name}.aggregate failed: {type(exc).__name__}: {exc}") from exc
    checked = _checked(combined, "aggregate(batch_results)", n)
    lists = [k for k, v in checked.items() if isinstance(v, list)]
    if lists:
        raise ScorerError(f"custom scorer aggregate() returned lists for {lists}; it returns one number per metric")
    return {k: float(v) for k, v in checked.items()}  # type: ignore[arg-type]


def _combine(
    results: list[dict[str, float | list[float]]], n: int
) -> tuple[dict[str, float], list[dict[str, float]] | None]:
    """Per-sample lists become their mean over all ``n`` samples (and per-sample scores); numbers,
    from a single whole-dataset call, are taken as they are."""
    values: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    for result in results:
        for key, value in result.items():
            if isinstance(value, list):
                samples.setdefault(key, []).extend(value)
            else:
                values[key] = value
    for key, scores in samples.items():
        values[key] = math.fsum(scores) / n if n else math.nan
    if not samples:
        return values, None
    per_sample = [{key: scores[i] for key, scores in samples.items()} for i in range(n)]
    return values, per_sample


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
