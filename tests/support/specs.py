"""Specs the engine tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalstack.spec import DatasetSpec, EvaluationSpec


def scorer_spec(dataset: Path, metrics: list[str], **hyperparameters: Any) -> EvaluationSpec:
    """A custom-scorer spec over ``dataset``, whose responses are scored: its model is never called."""
    return EvaluationSpec(
        eval_type="custom_scorer",
        model="openai:http://127.0.0.1:9/v1?model=unused",
        dataset=DatasetSpec(str(dataset)),
        metrics=metrics,
        hyperparameters=hyperparameters,
    )
