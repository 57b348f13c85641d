"""BLEU: a thin adapter over sacrebleu.

The corpus value is sacrebleu's corpus BLEU on its own 0-100 scale (the number its signature
describes and papers quote). Per-sample values are sacrebleu's sentence BLEU with the same
settings plus effective order, which is what ``sacrebleu.sentence_bleu`` does, so short
sentences without 4-gram matches do not all collapse to 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU

from evalstack.metrics.result import MetricResult, custom_scorer_params, reference_lists


def bleu(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], params: dict | None = None
) -> MetricResult:
    hp = custom_scorer_params(params)
    refs = reference_lists(predictions, references)
    settings = {
        "tokenize": hp.tokenize,
        "smooth_method": "exp" if hp.smooth else "none",
        "max_ngram_order": hp.max_order,
    }
    corpus = BLEU(**settings)
    # sacrebleu wants reference *streams* (one list per reference position); samples with
    # fewer references are padded with None, which sacrebleu skips.
    width = max(len(r) for r in refs)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
    score = corpus.corpus_score(list(predictions), streams)
    sentence = BLEU(**settings, effective_order=True)
    per_sample = [{"bleu": sentence.sentence_score(p, r).score} for p, r in zip(predictions, refs, strict=True)]
    signature = {
        "sacrebleu": str(corpus.get_signature()),
        # sacrebleu's signature leaves out the n-gram order, which changes the score.
        "max_ngram_order": str(hp.max_order),
    }
    return MetricResult({"bleu": score.score}, per_sample, signature)
