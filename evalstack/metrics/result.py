"""The value every metric adapter returns, and the input checks they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalstack.catalog.hyperparameters import CUSTOM_SCORER, Hyperparameters


@dataclass(frozen=True)
class MetricResult:
    """Corpus-level values, optional per-sample values, and what produced them.

    ``signature`` maps a library name to its version or its own reproducibility string
    (sacrebleu's signature, bert-score's hash), so a reported number can be traced to the
    exact implementation and settings that made it.
    """

    values: dict[str, float]
    per_sample: list[dict[str, float]] | None
    signature: dict[str, str]


def custom_scorer_params(params: dict[str, Any] | None) -> Hyperparameters:
    """Validate ``params`` against the CUSTOM_SCORER schema and fill in the defaults."""
    try:
        return Hyperparameters(CUSTOM_SCORER, params or {})
    except AttributeError as exc:  # unknown name: the engine treats bad input as ValueError
        raise ValueError(str(exc)) from exc


def reference_lists(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Normalise references to one non-empty list of strings per prediction.

    A plain string is a single reference; a list is several references for the same sample
    (multi-reference), which BLEU, ROUGE, METEOR and BERTScore all support.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    out: list[list[str]] = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(pred, str):
            raise ValueError(f"prediction {i} must be a string, got {type(pred).__name__}")
        if isinstance(ref, str):  # the common case, without the checks a list needs
            out.append([ref])
            continue
        refs = list(ref)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"reference {i} must be a string or a non-empty list of strings, got {ref!r}")
        out.append(refs)
    return out


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))
