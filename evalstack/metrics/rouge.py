"""ROUGE: a thin adapter over Google's rouge-score.

Reports, per ROUGE type, the mean over samples of rouge-score's F-measure, like Hugging Face
``evaluate``'s rouge with ``use_aggregator=False`` averaged (no bootstrap resampling, so the
value is exact and deterministic). With several references per sample, rouge-score's
``score_multi`` keeps the reference with the best F-measure for each type. ``rougeLsum``
treats newlines as sentence boundaries; text is not sentence-split for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

from rouge_score import rouge_scorer

from evalstack.metrics.result import MetricResult, custom_scorer_params, mean, reference_lists


def rouge(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], params: dict | None = None
) -> MetricResult:
    hp = custom_scorer_params(params)
    refs = reference_lists(predictions, references)
    scorer = rouge_scorer.RougeScorer(hp.rouge_types, use_stemmer=hp.use_stemmer)
    per_sample = [
        {t: s.fmeasure for t, s in scorer.score_multi(r, p).items()} for p, r in zip(predictions, refs, strict=True)
    ]
    values = {t: mean([s[t] for s in per_sample]) for t in hp.rouge_types}
    return MetricResult(values, per_sample, {"rouge-score": version("rouge-score")})
