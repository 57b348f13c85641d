"""BERTScore: a thin adapter over bert-score's ``score``.

torch and bert_score are imported on first use, so every other metric works on an install
without the ``bertscore`` extra. ``model_type`` may be a Hugging Face model id or a local
model directory; bert-score's layer table only knows model ids, so a local directory needs
``num_layers``. Weights are loaded by transformers: set ``HF_HUB_OFFLINE=1`` to forbid any
download and give a local path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from evalstack.metrics.result import MetricResult, custom_scorer_params, mean, reference_lists


def bertscore(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], params: dict | None = None
) -> MetricResult:
    hp = custom_scorer_params(params)
    refs = reference_lists(predictions, references)
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
    # One reference each goes in as plain strings, exactly as a direct bert-score call would;
    # lists take bert-score's multi-reference path (best F1 among a sample's references).
    single = all(len(r) == 1 for r in refs)
    (precision, recall, f1), hash_code = bert_score.score(
        list(predictions),
        [r[0] for r in refs] if single else refs,
        model_type=hp.model_type,
        num_layers=hp.num_layers,
        lang=hp.lang,
        rescale_with_baseline=hp.rescale_with_baseline,
        return_hash=True,
    )
    per_sample = [
        {"bertscore_precision": p, "bertscore_recall": r, "bertscore_f1": f}
        for p, r, f in zip(precision.tolist(), recall.tolist(), f1.tolist(), strict=True)
    ]
    values = {k: mean([s[k] for s in per_sample]) for k in ("bertscore_precision", "bertscore_recall", "bertscore_f1")}
    return MetricResult(values, per_sample, {"bert-score": hash_code})
