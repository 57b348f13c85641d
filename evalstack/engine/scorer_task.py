"""The custom-scorer task: score a dataset's responses with preset metrics or a user scorer.

Responses come from the dataset when every record has one; otherwise the model generates them.
Scoring happens in ``aggregate`` because corpus metrics (BLEU, macro F1) need every record at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalstack import storage
from evalstack.catalog import BuiltInMetric
from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.data import DatasetReader
from evalstack.data.items import record_item
from evalstack.metrics import MetricResult, compute_preset, load_scorer, run_custom_scorer
from evalstack.models.base import ModelBackend
from evalstack.models.prompts import answer_prompts
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, Item

# Presets whose corpus value is the mean of their per-sample values, so a standard error is defined.
MEAN_OF_SAMPLES = frozenset(
    {BuiltInMetric.ACCURACY, BuiltInMetric.ROUGE, BuiltInMetric.METEOR, BuiltInMetric.BERTSCORE}
)
Z_95 = 1.959963984540054


def mean_stderr(values: Sequence[float]) -> float:
    """Sample standard deviation (n-1) over sqrt(n), as lm-evaluation-harness reports it."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


class ScorerTask:
    def __init__(self, spec: EvaluationSpec, role: str) -> None:
        if spec.dataset is None:
            raise ValueError("dataset: required for a custom-scorer evaluation")
        self.spec = spec
        # A dataset's responses belong to the model under evaluation; the base model answers itself.
        self.role = role
        self.hp = Hyperparameters.for_kind("custom_scorer", spec.hyperparameters).to_dict()
        self._reader = DatasetReader(spec.dataset, limit=self.hp["limit"])
        self._items: list[Item] | None = None

    def items(self) -> list[Item]:
        if self._items is None:
            self._items = [record_item(r) for r in self._reader]
        return self._items

    @property
    def needs_model(self) -> bool:
        self.items()
        return self.role == "base" or not self._reader.summary.has_responses

    def dataset_sha256(self) -> str:
        self.items()
        return self._reader.summary.sha256

    def run(self, items: Sequence[Item], model: ModelBackend | None) -> list[dict[str, Any]]:
        missing = [item for item in items if self.role == "base" or item.data["response"] is None]
        generated: dict[str, str] = {}
        if missing:
            if model is None:
                raise ValueError(
                    f"model: {len(missing)} record(s) need a {self.role} model response and no model was given"
                )
            answers = answer_prompts(model, [item.data["prompt"] for item in missing], self.hp)
            generated = dict(zip((i.id for i in missing), answers, strict=True))
        return [
            {
                "id": item.id,
                "subtask": None,
                "line": item.data["line"],
                "prompt": item.data["prompt"],
                "response": generated.get(item.id, item.data["response"]),
                "generated": item.id in generated,
                "reference": item.data["reference"],
                "metadata": item.data["metadata"],
                "scores": {},
            }
            for item in items
        ]

    def aggregate(self, records: Sequence[dict[str, Any]]) -> Aggregate:
        no_reference = next((r for r in records if r["reference"] is None), None)
        if no_reference is not None:
            raise ValueError(
                f"{self.spec.dataset.uri}: line {no_reference['line']}: field "  # type: ignore[union-attr]
                f"{self.spec.dataset.columns.reference!r}: missing; scoring needs a reference for every record"  # type: ignore[union-attr]
            )
        predictions = [r["response"] for r in records]
        references = [r["reference"] for r in records]
        agg = Aggregate(
            metrics={}, details={"signatures": {}, "generated_responses": sum(r["generated"] for r in records)}
        )
        for name in self.spec.metrics:
            self._add(agg, records, BuiltInMetric(name), compute_preset(name, predictions, references, self.hp))
        if self.spec.custom_scorer_uri:
            scorer = load_scorer(storage.read_bytes(self.spec.custom_scorer_uri))
            metadata = [{"prompt": r["prompt"], "line": r["line"], **r["metadata"]} for r in records]
            result = run_custom_scorer(scorer, predictions, references, metadata, self.hp["batch_size"])
            self._add(agg, records, None, result)
            declared = getattr(scorer, "primary_metric", None)
            if isinstance(declared, str) and declared in result.values:
                agg.details["primary_metric"] = declared
        return agg

    @staticmethod
    def _add(
        agg: Aggregate, records: Sequence[dict[str, Any]], metric: BuiltInMetric | None, result: MetricResult
    ) -> None:
        clash = set(result.values) & set(agg.metrics)
        if clash:
            raise ValueError(f"metric name(s) {sorted(clash)} reported twice; rename the custom scorer's keys")
        agg.metrics.update(result.values)
        agg.details["signatures"].update(result.signature)
        if not result.per_sample:
            return
        for record, scores in zip(records, result.per_sample, strict=True):
            agg.sample_scores.setdefault(record["id"], {}).update(scores)
        if metric not in MEAN_OF_SAMPLES:
            return
        for key, value in result.values.items():
            se = mean_stderr([s[key] for s in result.per_sample])
            if math.isnan(se):
                continue
            agg.stderr[key] = se
            agg.confidence_intervals[key] = [value - Z_95 * se, value + Z_95 * se]
