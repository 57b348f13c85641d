"""One entry point for every preset metric: ``compute_preset``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from evalstack.catalog.metrics import CLASSIFICATION_METRICS, BuiltInMetric, resolve_builtin_metric
from evalstack.metrics.bertscore import bertscore
from evalstack.metrics.bleu import bleu
from evalstack.metrics.classification import classification_metric
from evalstack.metrics.meteor import meteor
from evalstack.metrics.result import MetricResult
from evalstack.metrics.rouge import rouge

Adapter = Callable[[Sequence[str], Sequence[str] | Sequence[Sequence[str]], dict[str, Any] | None], MetricResult]

ADAPTERS: dict[BuiltInMetric, Adapter] = {
    **{m: partial(classification_metric, m) for m in CLASSIFICATION_METRICS},
    BuiltInMetric.BLEU: bleu,
    BuiltInMetric.ROUGE: rouge,
    BuiltInMetric.METEOR: meteor,
    BuiltInMetric.BERTSCORE: bertscore,
}


def compute_preset(
    metric: BuiltInMetric | str,
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    params: dict[str, Any] | None = None,
) -> MetricResult:
    """Score ``predictions`` with a preset metric.

    ``references`` holds one string per prediction, or a list of strings per prediction for
    the text metrics that accept several references. ``params`` uses the CUSTOM_SCORER
    hyperparameter names (``evalstack.catalog.hyperparameters``); missing ones take their
    defaults, unknown or out-of-range ones raise ValueError.
    """
    return ADAPTERS[resolve_builtin_metric(metric)](predictions, references, params)
