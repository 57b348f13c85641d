"""BERTScore: a thin adapter over bert-score's ``score``.

torch and bert_score are imported on first use, so every other metric works on an install
without the ``bertscore`` extra. ``model_type`` may be a Hugging Face model id or a local
model directory; bert-score's layer table only knows model ids, so a local directory needs
``num_layers``. Weights are loaded by transformers: set ``HF_HUB_OFFLINE=1`` to forbid any
download and give a local path.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.metrics.result import reference_lists

KEYS = ("bertscore_precision", "bertscore_recall", "bertscore_f1")


def _bert_score(hp: Hyperparameters) -> Any:
    try:
        import bert_score
        from bert_score.utils import model2layers
    except ImportError as exc:
        raise ImportError("bertscore needs the optional extra: pip install 'evalstack[bertscore]'") from exc

    if hp.num_layers is None and hp.model_type not in model2layers:
        raise ValueError(
            f"num_layers is required for model_type {hp.model_type!r}: bert-score's layer table "
            "has no recommended layer for it"
        )
    if hp.rescale_with_baseline:
        package_dir = os.path.dirname(bert_score.__file__)
        baseline = os.path.join(package_dir, "rescale_baseline", hp.lang, f"{hp.model_type}.tsv")
        if not os.path.isfile(baseline):
            # bert-score only prints a warning and returns unscaled scores; refuse instead.
            raise ValueError(
                f"rescale_with_baseline=True but bert-score has no baseline for model_type "
                f"{hp.model_type!r} and lang {hp.lang!r} ({baseline})"
            )
    return bert_score


@functools.cache
def _scorer(bert_score: Any, model_type: str, num_layers: int | None, lang: str, rescale: bool) -> Any:
    """One loaded model per setting for the process: chunks of a streamed corpus reuse it. bert-score's
    ``BERTScorer.score`` is the computation its ``score`` function runs, minus loading the model."""
    return bert_score.BERTScorer(model_type=model_type, num_layers=num_layers, lang=lang, rescale_with_baseline=rescale)


def bertscore_samples(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[dict[str, float]]:
    refs = reference_lists(predictions, references)
    bert_score = _bert_score(hp)
    # One reference each goes in as plain strings, exactly as a direct bert-score call would;
    # lists take bert-score's multi-reference path (best F1 among a sample's references).
    single = all(len(r) == 1 for r in refs)
    scorer = _scorer(bert_score, hp.model_type, hp.num_layers, hp.lang, hp.rescale_with_baseline)
    precision, recall, f1 = scorer.score(list(predictions), [r[0] for r in refs] if single else refs)
    return [dict(zip(KEYS, t, strict=True)) for t in zip(precision.tolist(), recall.tolist(), f1.tolist(), strict=True)]


def bertscore_signature(hp: Hyperparameters) -> dict[str, str]:
    """bert-score's own hash of the settings, as ``score(..., return_hash=True)`` gives it."""
    _bert_score(hp)
    from bert_score.utils import get_hash, model2layers

    num_layers = hp.num_layers if hp.num_layers is not None else model2layers[hp.model_type]
    hash_code = get_hash(
        hp.model_type, num_layers, False, hp.rescale_with_baseline, use_custom_baseline=False, use_fast_tokenizer=False
    )
    return {"bert-score": hash_code}
