"""The custom-scorer task: score a dataset's responses with preset metrics or a user scorer.

Responses come from the dataset when every record has one; otherwise the model generates them.
Everything streams: items come from the reader, ``run`` scores each chunk's samples (the per-sample
values of ROUGE, METEOR, BERTScore, BLEU and accuracy), and ``aggregate_stream`` folds the merged
records into online state (sums, confusion counts, BLEU statistics) while passing each one on to
samples.jsonl. Only a custom scorer that neither returns per-sample values nor aggregates batches
sees the whole dataset at once, up to ``WHOLE_DATASET_SAMPLES`` (see evalstack.metrics.custom).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from evalstack import storage
from evalstack.catalog import BuiltInMetric
from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.data import DatasetReader, DatasetSummary
from evalstack.data.items import record_item
from evalstack.metrics import MetricResult, PresetScorer, load_scorer, run_custom_scorer
from evalstack.metrics.custom import ScorerStream, scores_whole_dataset
from evalstack.metrics.pool import SamplePool, step_pool
from evalstack.metrics.registry import Z_95
from evalstack.models.base import ModelBackend
from evalstack.models.prompts import answer_prompts
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, Item, ModelNeeded

# A merged record and its samples.jsonl line when already encoded; what receives each final record.
Merged = tuple[dict[str, Any], bytes | None]
Emit = Callable[[dict[str, Any], bytes | None], None]
# Records per aggregation chunk in the Report step: what it holds at once besides online state.
AGGREGATE_CHUNK = 4096


class ScorerTask:
    def __init__(self, spec: EvaluationSpec, role: str) -> None:
        if spec.dataset is None:
            raise ValueError("dataset: required for a custom-scorer evaluation")
        self.spec = spec
        # A dataset's responses belong to the model under evaluation; the base model answers itself.
        self.role = role
        self.hp = Hyperparameters.for_kind("custom_scorer", spec.hyperparameters).to_dict()
        self._reader = DatasetReader(spec.dataset, limit=self.hp["limit"])
        self._summary: DatasetSummary | None = None

    def iter_items(self) -> Iterator[Item]:
        """Every item, streamed from the dataset; a complete pass also records the dataset's summary."""
        for record in self._reader:
            yield record_item(record)
        self._summary = self._reader.summary

    def items(self) -> list[Item]:
        return list(self.iter_items())

    def scan(self) -> DatasetSummary:
        """Validate the whole dataset in one pass without keeping it (once; later calls, and other tasks of
        this process over the same unchanged local file, reuse it)."""
        if self._summary is None:
            self._summary = self._reader.known_summary()
        if self._summary is None:
            for _ in self._reader:  # records, not items: nothing is kept
                pass
            self._summary = self._reader.summary
        return self._summary

    def item_count(self) -> int:
        return self.scan().count

    @property
    def needs_model(self) -> bool:
        return self.role == "base" or not self.scan().has_responses

    @property
    def answers_in_data(self) -> bool:
        """The candidate's answers may be the dataset's responses; the base model always answers itself."""
        return self.role == "candidate"

    def progress_estimate(self) -> float | None:
        return self._reader.fraction_read()

    def dataset_sha256(self) -> str:
        return self.scan().sha256

    def _presets(self, pool: SamplePool | None = None) -> list[PresetScorer]:
        return [PresetScorer(name, self.hp, pool) for name in self.spec.metrics]

    def run(self, items: Sequence[Item], model: ModelBackend | None) -> list[dict[str, Any]]:
        no_reference = next((item for item in items if item.data["reference"] is None), None)
        if no_reference is not None:
            raise ValueError(
                f"{self.spec.dataset.uri}: line {no_reference.data['line']}: field "  # type: ignore[union-attr]
                f"{self.spec.dataset.columns.reference!r}: missing; scoring needs a reference for every record"  # type: ignore[union-attr]
            )
        missing = [item for item in items if self.role == "base" or item.data["response"] is None]
        generated: dict[str, str] = {}
        if missing:
            if model is None:
                raise ModelNeeded(
                    f"model: {len(missing)} record(s) need a {self.role} model response and no model was given"
                )
            answers = answer_prompts(model, [item.data["prompt"] for item in missing], self.hp)
            generated = dict(zip((i.id for i in missing), answers, strict=True))
        records = [
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
        if records:
            # Per-sample values are computed here, in the (sharded) evaluation step, chunk by chunk.
            predictions = [r["response"] for r in records]
            references = [r["reference"] for r in records]
            for preset in self._presets(step_pool()):
                for record, scores in zip(records, preset.score(predictions, references) or (), strict=False):
                    record["scores"].update(scores)
        return records

    def aggregate(self, records: Sequence[dict[str, Any]]) -> Aggregate:
        """The list form of ``aggregate_stream``: custom per-sample scores land in the records themselves."""
        return self.aggregate_stream(((r, None) for r in records), lambda _r, _line: None, count=len(records))

    def aggregate_stream(self, records: Iterable[Merged], emit: Emit, *, count: int | None = None) -> Aggregate:
        """Fold records (in item order, as ``run`` made them) into the metrics, passing each record on to
        ``emit`` with its final scores. Each record comes with its samples.jsonl line when already encoded
        (else None), passed on while the record is unchanged. ``count`` is the number of records, when
        the caller knows it."""
        presets = self._presets()
        agg = Aggregate(metrics={}, details={"signatures": {}, "generated_responses": 0})
        scorer = load_scorer(storage.read_bytes(self.spec.custom_scorer_uri)) if self.spec.custom_scorer_uri else None
        batch_size = self.hp["batch_size"]
        held: list[dict[str, Any]] | None = None
        stream: ScorerStream | None = None
        if scorer is not None:
            n = self.item_count() if count is None else count
            if scores_whole_dataset(scorer, n):
                held = []  # bounded by WHOLE_DATASET_SAMPLES
            else:
                stream = ScorerStream(scorer, n, batch_size)
        # A chunk is a multiple of the scorer's batch, so batches are those of one whole-dataset call.
        chunk_size = -(-AGGREGATE_CHUNK // batch_size) * batch_size
        records = iter(records)
        while pairs := list(islice(records, chunk_size)):
            chunk = [record for record, _ in pairs]
            predictions = [r["response"] for r in chunk]
            references = [r["reference"] for r in chunk]
            for preset in presets:
                preset.add(predictions, references, [r["scores"] for r in chunk])
            agg.details["generated_responses"] += sum(r["generated"] for r in chunk)
            if stream is not None:
                per_sample = stream.feed(predictions, references, _metadata(chunk))
                for record, scores in zip(chunk, per_sample or (), strict=False):
                    record["scores"] = {**record["scores"], **scores}
            if held is not None:
                held.extend(chunk)
                continue
            if stream is None:
                for record, line in pairs:
                    emit(record, line)
            else:  # scores changed: encoded again
                for record in chunk:
                    emit(record, None)
            del chunk, pairs  # before the next one is read, so only one chunk is ever held
        for preset in presets:
            self._add(agg, preset.metric, preset.result(), preset.stderr())
        if held is not None:
            result = run_custom_scorer(
                scorer,  # type: ignore[arg-type]
                [r["response"] for r in held],
                [r["reference"] for r in held],
                _metadata(held),
                batch_size,
            )
            for record, scores in zip(held, result.per_sample or (), strict=False):
                record["scores"] = {**record["scores"], **scores}
            for record in held:
                emit(record, None)
        elif stream is not None:
            result = stream.result()
        if scorer is not None:
            self._add(agg, None, result, {})
            declared = getattr(scorer, "primary_metric", None)
            if isinstance(declared, str) and declared in result.values:
                agg.details["primary_metric"] = declared
        return agg

    @staticmethod
    def _add(agg: Aggregate, metric: BuiltInMetric | None, result: MetricResult, stderr: dict[str, float]) -> None:
        clash = set(result.values) & set(agg.metrics)
        if clash:
            raise ValueError(f"metric name(s) {sorted(clash)} reported twice; rename the custom scorer's keys")
        agg.metrics.update(result.values)
        agg.details["signatures"].update(result.signature)
        for key, se in stderr.items():
            value = result.values[key]
            agg.stderr[key] = se
            agg.confidence_intervals[key] = [value - Z_95 * se, value + Z_95 * se]


def _metadata(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"prompt": r["prompt"], "line": r["line"], **r["metadata"]} for r in records]
