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
    scorer: CustomScorer, start: int, args: tuple[Sequence[Any], Sequence[Any], Sequence[Any] | None], batch: int | None
) -> tuple[Any, str]:
    """The scorer's raw result for ``args`` (the samples from ``start`` on), and how to name them in messages."""
    predictions, references, metadata = args
    stop = start + len(predictions)
    where = f"samples {start}-{stop - 1}" if batch is None else f"batch {batch} (samples {start}-{stop - 1})"
    try:
        return scorer.score(list(predictions), list(references), None if metadata is None else list(metadata)), where
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


def _signature(scorer: CustomScorer) -> dict[str, str]:
    return {
        "custom_scorer": f"{type(scorer).__module__}.{type(scorer).__qualname__}",
        "cloudpickle": importlib.metadata.version("cloudpickle"),
    }


def _checked_scorer(scorer: CustomScorer, batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not callable(getattr(scorer, "score", None)):
        raise ScorerError(f"{type(scorer).__name__} has no score(predictions, ground_truth, metadata) method")


def scores_whole_dataset(scorer: CustomScorer, n: int) -> bool:
    """Whether ``n`` samples go to the scorer in one call (way 3) rather than batch by batch."""
    return not callable(getattr(scorer, "aggregate", None)) and n <= WHOLE_DATASET_SAMPLES


def _add_exact(partials: list[float], x: float) -> None:
    """Add ``x`` to a running sum kept exactly as non-overlapping partials (Shewchuk, as math.fsum does)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


class ScorerStream:
    """The streamed ways (1 and 2) over a dataset of ``n`` samples fed in order, chunk by chunk.

    A chunk is cut into ``batch_size`` batches (every chunk but the last must be a multiple of it),
    so batch numbers and boundaries are those of one call over the whole dataset. Per-sample means
    are exact sums (``math.fsum`` of all values), so chunking never changes a result.
    """

    def __init__(self, scorer: CustomScorer, n: int, batch_size: int = 8) -> None:
        _checked_scorer(scorer, batch_size)
        self.scorer = scorer
        self.n = n
        self.batch_size = batch_size
        aggregate = getattr(scorer, "aggregate", None)
        self._aggregate = aggregate if callable(aggregate) else None
        self._batch_results: list[dict[str, float | list[float]]] = []
        self._sums: dict[str, list[float]] = {}
        self._start = 0
        self._batch = 0

    def feed(
        self,
        predictions: Sequence[str],
        references: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> list[dict[str, float]] | None:
        """Score the next samples; their per-sample values (way 1) or None (way 2)."""
        size = len(predictions)
        if size != len(references):
            raise ValueError(f"{size} predictions but {len(references)} references")
        if metadata is not None and len(metadata) != size:
            raise ValueError(f"{size} predictions but {len(metadata)} metadata records")
        if self._start % self.batch_size:
            raise ValueError(f"only the last chunk may be shorter than a multiple of batch_size {self.batch_size}")
        samples: dict[str, list[float]] = {}
        for start in range(0, size, self.batch_size):
            stop = min(start + self.batch_size, size)
            batch = (
                predictions[start:stop],
                references[start:stop],
                None if metadata is None else metadata[start:stop],
            )
            result, where = _call(self.scorer, self._start, batch, self._batch)
            checked = _checked(result, where, stop - start)
            self._batch += 1
            self._start += stop - start
            if self._aggregate is not None:
                self._batch_results.append(checked)
                continue
            single = [k for k, v in checked.items() if not isinstance(v, list)]
            if single:
                raise _not_streamable(self.scorer, self.n, where, single)
            for key, values in checked.items():
                samples.setdefault(key, []).extend(values)  # type: ignore[arg-type]
                partials = self._sums.setdefault(key, [])
                for value in values:  # type: ignore[union-attr]
                    _add_exact(partials, value)
        if self._aggregate is not None:
            return None
        return [{key: values[i] for key, values in samples.items()} for i in range(size)] if samples else None

    def result(self) -> MetricResult:
        if self._aggregate is not None:
            values = _aggregated(self.scorer, self._aggregate, self._batch_results, self._start)
        else:
            values = {k: math.fsum(p) / self._start if self._start else math.nan for k, p in self._sums.items()}
        return MetricResult(values, None, _signature(self.scorer))


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
    _checked_scorer(scorer, batch_size)
    if scores_whole_dataset(scorer, n):
        result, where = _call(scorer, 0, (predictions, references, metadata), None)
        values, per_sample = _combine([_checked(result, where, n)], n)
        return MetricResult(values, per_sample, _signature(scorer))
    stream = ScorerStream(scorer, n, batch_size)
    per_sample = stream.feed(predictions, references, metadata)
    return MetricResult(stream.result().values, per_sample, _signature(scorer))


def _aggregated(
    scorer: CustomScorer, aggregate: Any, batch_results: list[dict[str, float | list[float]]], n: int
) -> dict[str, float]:
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
    """A whole-dataset call's result: per-sample lists become their mean over all ``n`` samples (and
    per-sample scores); numbers are taken as they are."""
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
