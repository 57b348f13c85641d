"""accuracy, f1, precision and recall: thin adapters over scikit-learn.

Labels arrive as strings (model output and dataset ground truth) and are compared after
``strip()``. With ``threshold`` set, both sides are parsed as numbers and binarised
(``value >= threshold`` -> "1", else "0"), so a regression-style score or a probability can
be evaluated as a binary classifier.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from operator import eq
from typing import Any

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.catalog.metrics import BuiltInMetric
from evalstack.metrics.result import reference_lists

# scikit-learn (which imports scipy) is imported where F1, precision and recall are computed, once per
# corpus: per-sample accuracy is a comparison, and importing it took longer than scoring a million samples.
_AVERAGED = {
    BuiltInMetric.F1: "f1_score",
    BuiltInMetric.PRECISION: "precision_score",
    BuiltInMetric.RECALL: "recall_score",
}


def _averaged(metric: BuiltInMetric) -> Callable[..., Any]:
    from sklearn import metrics as skm

    return getattr(skm, _AVERAGED[metric])


def _binarise(label: str, threshold: float, side: str, index: int) -> str:
    try:
        value = float(label)
    except ValueError:
        raise ValueError(
            f"{side} {index}: {label!r} is not a number, but threshold={threshold} needs numeric labels"
        ) from None
    return "1" if value >= threshold else "0"


def _labels(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], threshold: float | None
) -> tuple[list[str], list[str]]:
    if predictions and len(predictions) == len(references) and _strings(predictions) and _strings(references):
        y_true, y_pred = list(map(str.strip, references)), list(map(str.strip, predictions))  # type: ignore[arg-type]
    else:  # lists of labels, or bad input: checked (and named) label by label
        y_true, y_pred = _checked_labels(predictions, references)
    if threshold is not None:
        y_true = [_binarise(v, threshold, "reference", i) for i, v in enumerate(y_true)]
        y_pred = [_binarise(v, threshold, "prediction", i) for i, v in enumerate(y_pred)]
    return y_pred, y_true


def _strings(values: Sequence[object]) -> bool:
    return set(map(type, values)) == {str}


def _checked_labels(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> tuple[list[str], list[str]]:
    y_true: list[str] = []
    for i, refs in enumerate(reference_lists(predictions, references)):
        if len(refs) != 1:
            raise ValueError(f"reference {i}: classification needs exactly one label, got {refs!r}")
        y_true.append(refs[0].strip())
    return y_true, [p.strip() for p in predictions]


def _pos_label(average: str, pos_label: str | None, threshold: float | None, labels: set[str]) -> str | None:
    """The positive class for average='binary'; None for the other averages."""
    if average != "binary":
        if pos_label is not None:
            raise ValueError(f"pos_label={pos_label!r} only applies with average='binary', not {average!r}")
        return None
    if len(labels) > 2:
        raise ValueError(
            f"average='binary' needs at most 2 distinct labels, found {len(labels)}: {sorted(labels)}; "
            "use average='micro', 'macro' or 'weighted'"
        )
    if pos_label is None:
        if threshold is None:
            # sklearn's default pos_label=1 can never match string labels, so make the user choose.
            raise ValueError(f"average='binary' needs pos_label (one of {sorted(labels)}) or a threshold")
        return "1"
    pos_label = pos_label.strip()
    if len(labels) == 2 and pos_label not in labels:
        raise ValueError(f"pos_label={pos_label!r} is not one of the labels {sorted(labels)}")
    return pos_label


def accuracy_samples(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[dict[str, float]]:
    return [{"accuracy": value} for value in accuracy_column(predictions, references, hp)]


def accuracy_column(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[float]:
    """Each sample's accuracy, 1.0 or 0.0."""
    y_pred, y_true = _labels(predictions, references, hp.threshold)
    return list(map(float, map(eq, y_pred, y_true)))


def signature(hp: Hyperparameters) -> dict[str, str]:
    return {"scikit-learn": metadata.version("scikit-learn")}


class ConfusionCounts:
    """precision, recall and F1 over chunks: a count per (true, predicted) label pair.

    Every ``average`` of these metrics is a function of the confusion counts, so sklearn scores the
    distinct pairs weighted by their counts, which is the whole corpus's value exactly. Its ``state``
    keys each count by its pair, encoded as the JSON list ``[true, predicted]``, so states of chunks or
    shards add key by key, in any order.
    """

    def __init__(self, metric: BuiltInMetric, hp: Hyperparameters) -> None:
        if metric not in _AVERAGED:
            raise ValueError(f"{metric} is not a classification metric")
        self.metric = metric
        self.hp = hp
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        y_pred, y_true = _labels(predictions, references, self.hp.threshold)
        self.counts.update(zip(y_true, y_pred, strict=True))

    def state(self) -> dict[str, int] | None:
        return {json.dumps(pair): count for pair, count in sorted(self.counts.items())} or None

    def add_state(self, state: Mapping[str, int]) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        for key, count in state.items():
            try:
                pair = json.loads(key)
            except ValueError:
                pair = None
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(label, str) for label in pair)):
                raise ValueError(f"key {key!r} is not a JSON list of the true and the predicted label")
            counts[pair[0], pair[1]] = count
        self.counts.update(counts)

    def values(self) -> dict[str, float]:
        if not self.counts:
            raise ValueError("no predictions to score")
        pairs = sorted(self.counts)
        y_true = [t for t, _ in pairs]
        y_pred = [p for _, p in pairs]
        hp = self.hp
        pos_label = _pos_label(hp.average, hp.pos_label, hp.threshold, set(y_true) | set(y_pred))
        # zero_division=0.0 is the value sklearn's default ("warn") gives, minus the warning.
        kwargs = {"average": hp.average, "zero_division": 0.0}
        if pos_label is not None:
            kwargs["pos_label"] = pos_label
        import numpy as np

        weights = np.array([self.counts[pair] for pair in pairs], dtype=np.int64)
        # f1/precision/recall are corpus-level only: a single sample has no F1 of its own.
        value = float(_averaged(self.metric)(y_true, y_pred, sample_weight=weights, **kwargs))
        return {self.metric.value: value}

    def signature(self) -> dict[str, str]:
        return signature(self.hp)
