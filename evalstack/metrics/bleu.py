"""BLEU: a thin adapter over sacrebleu.

The corpus value is sacrebleu's corpus BLEU on its own 0-100 scale (the number its signature
describes and papers quote). Per-sample values are sacrebleu's sentence BLEU with the same
settings plus effective order, which is what ``sacrebleu.sentence_bleu`` does, so short
sentences without 4-gram matches do not all collapse to 0.

Corpus BLEU is a function of sacrebleu's sufficient statistics (hypothesis and reference
lengths, n-gram matches and totals), which are integer sums over sentences; :class:`BleuStats`
adds them chunk by chunk, so a streamed corpus gets exactly ``corpus_score`` of the whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU
from sacrebleu.utils import sum_of_lists

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.metrics.result import reference_lists


def _settings(hp: Hyperparameters) -> dict:
    return {"tokenize": hp.tokenize, "smooth_method": "exp" if hp.smooth else "none", "max_ngram_order": hp.max_order}


def bleu_samples(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[dict[str, float]]:
    refs = reference_lists(predictions, references)
    sentence = BLEU(**_settings(hp), effective_order=True)
    return [{"bleu": sentence.sentence_score(p, r).score} for p, r in zip(predictions, refs, strict=True)]


class BleuStats:
    """Corpus BLEU over chunks: sacrebleu's per-sentence statistics, summed."""

    def __init__(self, hp: Hyperparameters) -> None:
        self.hp = hp
        self.corpus = BLEU(**_settings(hp))
        self.totals: list[int] | None = None

    def add(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        refs = reference_lists(predictions, references)
        # sacrebleu wants reference *streams* (one list per reference position); samples with
        # fewer references are padded with None, which sacrebleu skips.
        width = max(len(r) for r in refs)
        streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
        self.corpus._check_corpus_score_args(list(predictions), streams)
        chunk = sum_of_lists(self.corpus._extract_corpus_statistics(list(predictions), streams))
        self.totals = chunk if self.totals is None else [a + b for a, b in zip(self.totals, chunk, strict=True)]

    def values(self) -> dict[str, float]:
        if self.totals is None:
            raise ValueError("no predictions to score")
        return {"bleu": self.corpus._compute_score_from_stats(self.totals).score}

    def signature(self) -> dict[str, str]:
        return {
            "sacrebleu": str(self.corpus.get_signature()),
            # sacrebleu's signature leaves out the n-gram order, which changes the score.
            "max_ngram_order": str(self.hp.max_order),
        }
