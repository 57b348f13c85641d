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

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.metrics.light_imports import import_deferring
from evalstack.metrics.result import reference_lists

# rouge-score uses nltk's Porter stemmer only; nltk's __init__ would import scipy, scikit-learn and
# pandas (3-4 s, 210 MB per process, measured), so it is skipped: see evalstack.metrics.light_imports.
rouge_scorer = import_deferring("rouge_score.rouge_scorer", ("nltk", "nltk.stem"))


def rouge_samples(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[dict[str, float]]:
    refs = reference_lists(predictions, references)
    scorer = rouge_scorer.RougeScorer(hp.rouge_types, use_stemmer=hp.use_stemmer)
    return [
        {t: s.fmeasure for t, s in scorer.score_multi(r, p).items()} for p, r in zip(predictions, refs, strict=True)
    ]


def rouge_signature(hp: Hyperparameters) -> dict[str, str]:
    return {"rouge-score": version("rouge-score")}
