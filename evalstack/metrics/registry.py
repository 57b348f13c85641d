"""Every preset metric behind one online interface, and ``compute_preset`` for a whole corpus at once.

A preset is scored in two halves so a corpus of any size streams through it in chunks:
``PresetScorer.score`` gives per-sample values (where a sample has one), and ``PresetScorer.add``
folds a chunk into running state (sums for the means, confusion counts for F1, sacrebleu's
sufficient statistics for BLEU). ``result`` is then the value the canonical library gives on the
whole corpus. ``compute_preset`` is the one-chunk case.

Where the texts are at hand once (the evaluation step), ``score_block`` gives both halves from one
pass: the per-sample values and the chunk's corpus state, named integer sums that ``add_state`` folds
in any order, so the Report step needs no texts for F1 or BLEU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.catalog.metrics import CLASSIFICATION_METRICS, BuiltInMetric, resolve_builtin_metric
from evalstack.metrics.result import MetricResult, custom_scorer_params

if TYPE_CHECKING:
    from evalstack.metrics.pool import SamplePool

References = Sequence[str] | Sequence[Sequence[str]]
Samples = list[dict[str, float]]
Columns = dict[str, list[float]]
# A corpus metric's state over a chunk, a shard or the corpus: named integer sums (``PresetScorer.score_block``).
State = dict[str, int]

# Presets whose corpus value is the mean of their per-sample values, so a standard error is defined.
MEAN_OF_SAMPLES = frozenset(
    {BuiltInMetric.ACCURACY, BuiltInMetric.ROUGE, BuiltInMetric.METEOR, BuiltInMetric.BERTSCORE}
)
Z_95 = 1.959963984540054
# Per-sample CPU metrics worth a process pool (accuracy is a comparison; BERTScore batches a model).
POOLED = frozenset({BuiltInMetric.ROUGE, BuiltInMetric.METEOR, BuiltInMetric.BLEU})


class RunningMean:
    """Mean (a left-to-right sum, as ``sum(values) / n``) and the variance for the stderr, from left-to-right
    sums of the values and of their squares, both shifted by the first value (so that the two sums do not
    cancel). The sums are folded a chunk at a time by numpy's accumulate, which adds in the same order as
    a loop, so the result is the same bytes however the values are chunked (1 or N shards, any chunk
    size); a Python step per value cost more than everything else the Report step does with a score."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self._shift = 0.0
        self._sum = 0.0  # of value - shift
        self._squares = 0.0  # of (value - shift) ** 2

    def add(self, values: Sequence[float]) -> None:
        if not len(values):
            return
        import numpy as np  # only once there is something to fold: the client never needs it

        chunk = np.array(values, dtype=np.float64)
        if not self.n:
            self._shift = float(chunk[0])
        shifted = chunk - self._shift
        self.n += len(chunk)
        self.total = _sum_after(self.total, chunk)
        self._sum = _sum_after(self._sum, shifted)
        self._squares = _sum_after(self._squares, shifted * shifted)

    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def stderr(self) -> float:
        """Sample standard deviation (n-1) over sqrt(n), as lm-evaluation-harness reports it."""
        if self.n < 2:
            return math.nan
        variance = (self._squares - self._sum * self._sum / self.n) / (self.n - 1)
        return math.sqrt(max(variance, 0.0) / self.n)


def _sum_after(start: float, values: Any) -> float:
    """``start`` plus every value, added left to right (numpy's sum would add pairwise)."""
    import numpy as np

    return float(np.add.accumulate(np.concatenate(([start], values)))[-1])


def _samples_fn(metric: BuiltInMetric) -> Callable[[Sequence[str], References, Hyperparameters], Samples]:
    # Imported per metric so that scoring ROUGE never loads torch (bertscore) or nltk (meteor).
    if metric is BuiltInMetric.ACCURACY:
        from evalstack.metrics.classification import accuracy_samples

        return accuracy_samples
    if metric is BuiltInMetric.ROUGE:
        from evalstack.metrics.rouge import rouge_samples

        return rouge_samples
    if metric is BuiltInMetric.METEOR:
        from evalstack.metrics.meteor import meteor_samples

        return meteor_samples
    if metric is BuiltInMetric.BERTSCORE:
        from evalstack.metrics.bertscore import bertscore_samples

        return bertscore_samples
    from evalstack.metrics.bleu import bleu_samples

    return bleu_samples


def _signature(metric: BuiltInMetric, hp: Hyperparameters) -> dict[str, str]:
    if metric in CLASSIFICATION_METRICS:
        from evalstack.metrics.classification import signature

        return signature(hp)
    if metric is BuiltInMetric.ROUGE:
        from evalstack.metrics.rouge import rouge_signature

        return rouge_signature(hp)
    if metric is BuiltInMetric.METEOR:
        from evalstack.metrics.meteor import meteor_signature

        return meteor_signature(hp)
    from evalstack.metrics.bertscore import bertscore_signature

    return bertscore_signature(hp)


def mean_keys(metric: BuiltInMetric, hp: Hyperparameters) -> list[str]:
    if metric is BuiltInMetric.ROUGE:
        return list(hp.rouge_types)
    if metric is BuiltInMetric.BERTSCORE:
        return ["bertscore_precision", "bertscore_recall", "bertscore_f1"]
    return [metric.value]


class PresetScorer:
    """One preset metric, scored chunk by chunk (see the module docstring).

    With a ``pool``, the per-sample values of ROUGE, METEOR and BLEU are computed by its workers
    (identical values, in the same order); without one, in this process.
    """

    def __init__(
        self,
        metric: BuiltInMetric | str,
        params: dict[str, Any] | Hyperparameters | None = None,
        pool: SamplePool | None = None,
    ) -> None:
        self.metric = resolve_builtin_metric(metric)
        self.pool = pool if self.metric in POOLED else None
        self.hp = params if isinstance(params, Hyperparameters) else custom_scorer_params(params)
        self.means = {k: RunningMean() for k in mean_keys(self.metric, self.hp)} if self.is_mean else {}
        self._corpus = self._new_corpus()

    def _new_corpus(self) -> Any:
        """What folds the texts of a corpus metric (None for the means)."""
        if self.metric is BuiltInMetric.BLEU:
            from evalstack.metrics.bleu import BleuStats

            return BleuStats(self.hp)
        if self.metric in CLASSIFICATION_METRICS and not self.is_mean:
            from evalstack.metrics.classification import ConfusionCounts

            return ConfusionCounts(self.metric, self.hp)
        return None

    @property
    def is_mean(self) -> bool:
        return self.metric in MEAN_OF_SAMPLES

    @property
    def needs_texts(self) -> bool:
        """Whether ``add`` reads predictions and references (corpus metrics) or only sample scores."""
        return self._corpus is not None

    def score(self, predictions: Sequence[str], references: References) -> Samples | None:
        """Per-sample values of a chunk; None for F1/precision/recall, which have none."""
        if self.metric in CLASSIFICATION_METRICS and not self.is_mean:
            return None
        fn = _samples_fn(self.metric)
        if self.pool is not None:
            return self.pool.score(fn, predictions, references, self.hp)
        return fn(predictions, references, self.hp)

    def score_columns(self, predictions: Sequence[str], references: References) -> dict[str, list[float]] | None:
        """``score`` a column per key (every sample of a preset has the same keys); None likewise."""
        if self.metric is BuiltInMetric.ACCURACY:  # made as a column: a dict per sample cost more than scoring
            from evalstack.metrics.classification import accuracy_column

            return {"accuracy": accuracy_column(predictions, references, self.hp)}
        samples = self.score(predictions, references)
        if samples is None:
            return None
        return {key: list(map(itemgetter(key), samples)) for key in (samples[0] if samples else ())}

    def score_block(self, predictions: Sequence[str], references: References) -> tuple[Columns | None, State | None]:
        """``score_columns`` and the chunk's corpus state (``add_state``; None for the means), from one pass
        over the texts: BLEU's sentence values and its corpus sums come from one tokenization."""
        corpus = self._new_corpus()
        if corpus is None:
            return self.score_columns(predictions, references), None
        if self.metric is not BuiltInMetric.BLEU:  # F1, precision, recall: no per-sample values
            corpus.add(predictions, references)
            return None, corpus.state()
        from evalstack.metrics.bleu import bleu_scored

        scored: Any
        if self.pool is not None:  # it concatenates any per-sample lists in order: here (score, statistics, refs)
            scored = self.pool.score(bleu_scored, predictions, references, self.hp)  # type: ignore[arg-type]
        else:
            scored = bleu_scored(predictions, references, self.hp)
        corpus.add_scored(scored)
        return {"bleu": [score for score, _, _ in scored]}, corpus.state()

    def add(self, predictions: Sequence[str], references: References, scores: Sequence[dict[str, float]]) -> None:
        """Fold a chunk in, in corpus order; ``scores`` holds each sample's values (at least this metric's)."""
        if self._corpus is not None:
            self._corpus.add(predictions, references)
        for key, running in self.means.items():
            running.add(list(map(itemgetter(key), scores)))

    def add_scores(self, columns: Mapping[str, Sequence[float]]) -> None:
        """``add`` given the chunk's scores a column per key, without the texts: a corpus metric (``needs_texts``)
        takes its chunks' states instead (``add_state``)."""
        for key, running in self.means.items():
            running.add(columns[key])

    def add_state(self, state: Mapping[str, int]) -> None:
        """Fold in a corpus state (``score_block``'s, or their sum over chunks or shards): integer sums, so
        in any order. Raises ValueError for a state that is not this metric's."""
        if self._corpus is None:
            raise ValueError(f"{self.metric.value} is a mean of per-sample values: it has no corpus state")
        self._corpus.add_state(state)

    def result(self) -> MetricResult:
        """The corpus value (no per-sample values: the caller already has them from ``score``)."""
        if self._corpus is not None:
            return MetricResult(self._corpus.values(), None, self._corpus.signature())
        if not next(iter(self.means.values())).n:
            raise ValueError("no predictions to score")
        return MetricResult({k: m.mean() for k, m in self.means.items()}, None, _signature(self.metric, self.hp))

    def stderr(self) -> dict[str, float]:
        """Standard errors of the mean metrics (empty for corpus metrics and fewer than 2 samples)."""
        return {k: m.stderr() for k, m in self.means.items() if m.n >= 2}


def compute_preset(
    metric: BuiltInMetric | str,
    predictions: Sequence[str],
    references: References,
    params: dict[str, Any] | None = None,
) -> MetricResult:
    """Score ``predictions`` with a preset metric.

    ``references`` holds one string per prediction, or a list of strings per prediction for
    the text metrics that accept several references. ``params`` uses the CUSTOM_SCORER
    hyperparameter names (``evalstack.catalog.hyperparameters``); missing ones take their
    defaults, unknown or out-of-range ones raise ValueError.
    """
    scorer = PresetScorer(metric, params)
    columns, state = scorer.score_block(predictions, references)
    rows = zip(*(columns or {}).values(), strict=True)
    per_sample = None if columns is None else [dict(zip(columns, row, strict=True)) for row in rows]
    scorer.add_scores(columns or {})
    if state is not None:
        scorer.add_state(state)
    result = scorer.result()
    return MetricResult(result.values, per_sample, result.signature)
