"""The custom-scorer task: score a dataset's responses with preset metrics or a user scorer.

Responses come from the dataset when every record has one; otherwise the model generates them.
Everything streams: items come from the reader, ``run`` scores each chunk's samples (the per-sample
values of ROUGE, METEOR, BERTScore, BLEU and accuracy), and ``aggregate_stream`` folds the merged
records into online state (sums, confusion counts, BLEU statistics) while passing each one on to
samples.jsonl. A model-free pass (``run_block``) also makes each block's corpus states (confusion counts,
BLEU statistics, from the tokenization that gave sentence BLEU), so without a custom scorer the Report
step folds scores and states (``aggregate_scores``) and never parses a record. Only a custom scorer that
neither returns per-sample values nor aggregates batches sees the whole dataset at once, up to
``WHOLE_DATASET_SAMPLES`` (see evalstack.metrics.custom).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any

from evalstack import storage
from evalstack.catalog import BuiltInMetric
from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.data import DatasetReader, DatasetSummary
from evalstack.data.block_pool import BlockPool, spawned_workers
from evalstack.data.items import item_id, joined_item_ids, record_item
from evalstack.data.records import RecordBlock
from evalstack.metrics import MetricResult, PresetScorer, load_scorer, run_custom_scorer
from evalstack.metrics.custom import ScorerStream, scores_whole_dataset
from evalstack.metrics.pool import SamplePool, step_pool, worker_count
from evalstack.metrics.registry import Z_95
from evalstack.models.base import ModelBackend
from evalstack.models.prompts import answer_prompts
from evalstack.results.writer import streamed_line
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, Item, MergedBlock, ModelNeeded, ScoreBlock, ScoredBlock

try:  # optional, as for streamed_line: without it every record is encoded by streamed_line
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    orjson = None  # type: ignore[assignment]

# A merged record and its samples.jsonl line when already encoded; what receives each final record.
Emit = Callable[[list[dict[str, Any]], list[bytes | None]], None]
# The same given score columns (``ScoreBlock``): records, their lines and the columns.
ScoreEmit = Callable[[Sequence[dict[str, Any]], list[bytes], dict[str, Sequence[float]]], None]
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
        self.in_block_worker = False  # a worker of a block pool is one of its cores: no metric pool of its own

    def iter_items(self) -> Iterator[Item]:
        """Every item, streamed from the dataset; a complete pass also records the dataset's summary."""
        for block in self.iter_blocks():
            yield from map(record_item, block.records())

    def iter_blocks(self) -> Iterator[RecordBlock]:
        """The dataset's records in blocks (item ``i`` is record ``i``); a complete pass also records the
        dataset's summary."""
        yield from self._reader.blocks()
        self._summary = self._reader.summary

    def scored_blocks(self, shard_index: int, shard_count: int) -> Iterator[ScoredBlock]:
        """One pass over the dataset scoring without a model the items ``i`` with ``i % shard_count ==
        shard_index``, block by block (see ``run_block``); a complete
        pass also records the dataset's summary. A whole dataset (one shard) of a large JSON Lines file is
        scored by a pool of processes, one per core (``evalstack.data.block_pool``), with the same bytes."""
        if shard_count == 1:
            workers = spawned_workers(worker_count())  # as the client's pass: never from a user's script
            pool = BlockPool(workers, self.spec.dataset, partial(_block_scorer, self.spec, self.role))  # type: ignore[arg-type]
            yield from self._reader.mapped(self.run_block, pool)
        else:
            position = 0

            def shard_part(block: RecordBlock) -> ScoredBlock:
                nonlocal position
                part = block.part((shard_index - position) % shard_count, None, shard_count)
                position += len(block)
                return self.run_block(part)

            yield from self._reader.mapped(shard_part)
        self._summary = self._reader.summary

    def items(self) -> list[Item]:
        return list(self.iter_items())

    def scan(self) -> DatasetSummary:
        """Validate the whole dataset in one pass without keeping it (once; later calls, and other tasks of
        this process over the same unchanged local file, reuse it)."""
        if self._summary is None:
            self._summary = self._reader.known_summary()
        if self._summary is None:
            self._summary = self._reader.scan()  # keeps nothing
        return self._summary  # type: ignore[return-value]

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
        data = [item.data for item in items]
        lines = [d["line"] for d in data]
        references = [d["reference"] for d in data]
        self._check_references(lines, references)
        missing = [item for item in items if self.role == "base" or item.data["response"] is None]
        generated: dict[str, str] = {}
        if missing:
            if model is None:
                raise ModelNeeded(
                    f"model: {len(missing)} record(s) need a {self.role} model response and no model was given"
                )
            answers = answer_prompts(model, [item.data["prompt"] for item in missing], self.hp)
            generated = dict(zip((i.id for i in missing), answers, strict=True))
        responses = [generated.get(item.id, d["response"]) for item, d in zip(items, data, strict=True)]
        columns = _Columns(
            lines,
            [d["prompt"] for d in data],
            responses,
            [item.id in generated for item in items],
            references,
            [d["metadata"] for d in data],
        )
        samples, _ = self._preset_scores(responses, references)  # the Report step folds the records
        return columns.records(samples)

    def run_block(self, block: RecordBlock) -> ScoredBlock:
        """``run`` without a model over a block's records: their item ids, the bytes ``streamed_line`` gives
        for each of ``run``'s records (made a column at a time when the block is plain, see ``_Columns``),
        their scores a column per key and the corpus metrics' states."""
        self._check_references(block.lines, block.references)
        if len(block) and (self.role == "base" or None in block.responses):
            missing = len(block) if self.role == "base" else block.responses.count(None)
            raise ModelNeeded(f"model: {missing} record(s) need a {self.role} model response and no model was given")
        columns = _Columns(
            block.lines, block.prompts, block.responses, [False] * len(block), block.references, block.metadata
        )
        samples, states = self._preset_scores(block.responses, block.references)
        scores = _score_columns(samples, len(block))
        ids = joined_item_ids(block.lines).encode("utf-8")
        # Columns as float64 arrays: from a block pool's worker they come back as bytes, not float objects.
        arrays = None if scores is None else {key: array("d", values) for key, values in scores.items()}
        return ScoredBlock(len(block), ids, columns.encoded(samples, scores), arrays, states)

    def _check_references(self, lines: Sequence[int], references: Sequence[Any]) -> None:
        if None in references:
            raise ValueError(
                f"{self.spec.dataset.uri}: line {lines[references.index(None)]}: field "  # type: ignore[union-attr]
                f"{self.spec.dataset.columns.reference!r}: missing; scoring needs a reference for every record"  # type: ignore[union-attr]
            )

    def _preset_scores(
        self, predictions: list[Any], references: list[Any]
    ) -> tuple[list[dict[str, list[float]]], dict[str, dict[str, int]]]:
        """Each preset's per-sample values a column per key, and each corpus metric's state, by metric (in
        the (sharded) evaluation step, chunk by chunk)."""
        samples: list[dict[str, list[float]]] = []
        states: dict[str, dict[str, int]] = {}
        if not predictions:
            return samples, states
        pool = None if self.in_block_worker else step_pool()
        for preset in self._presets(pool):
            columns, state = preset.score_block(predictions, references)
            if columns is not None:
                samples.append(columns)
            if state is not None:
                states[preset.metric.value] = state
        return samples, states

    def aggregate(self, records: Sequence[dict[str, Any]]) -> Aggregate:
        """The list form of ``aggregate_stream``: custom per-sample scores land in the records themselves."""
        blocks = [(list(records), [None] * len(records))]
        return self.aggregate_stream(blocks, lambda _records, _lines: None, count=len(records))

    def aggregate_stream(self, blocks: Iterable[MergedBlock], emit: Emit, *, count: int | None = None) -> Aggregate:
        """Fold blocks of records (in item order, as ``run`` made them) into the metrics, passing them on to
        ``emit`` a chunk at a time with their final scores. Each record comes with its samples.jsonl line
        when already encoded (else None), passed on while the record is unchanged. ``count`` is the number
        of records, when the caller knows it."""
        presets = self._presets()
        agg = _new_aggregate()
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
        # Per-sample metrics fold the scores alone; the texts are listed only for what reads them.
        needs_texts = scorer is not None or any(preset.needs_texts for preset in presets)
        predictions: list[Any] = []
        references: list[Any] = []
        for chunk, lines in _rechunked(blocks, chunk_size):
            if needs_texts:
                predictions = list(map(itemgetter("response"), chunk))
                references = list(map(itemgetter("reference"), chunk))
            if presets:
                chunk_scores = list(map(itemgetter("scores"), chunk))
                for preset in presets:
                    preset.add(predictions, references, chunk_scores)
            agg.details["generated_responses"] += sum(map(itemgetter("generated"), chunk))
            if stream is not None:
                per_sample = stream.feed(predictions, references, _metadata(chunk))
                for record, scores in zip(chunk, per_sample or (), strict=False):
                    record["scores"] = {**record["scores"], **scores}
            if held is not None:
                held.extend(chunk)
                continue
            emit(chunk, lines if stream is None else [None] * len(chunk))  # changed scores: encoded again
            del chunk, lines  # before the next one is read, so only one chunk is ever held
        self._add_presets(agg, presets)
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
            emit(held, [None] * len(held))
        elif stream is not None:
            result = stream.result()
        if scorer is not None:
            self._add(agg, None, result, {})
            declared = getattr(scorer, "primary_metric", None)
            if isinstance(declared, str) and declared in result.values:
                agg.details["primary_metric"] = declared
        return agg

    @property
    def folds_scores(self) -> bool:
        """Every preset folds from scores (the means) or corpus states (F1, BLEU); a custom scorer reads texts."""
        return not self.spec.custom_scorer_uri

    def aggregate_scores(
        self, blocks: Iterable[ScoreBlock], emit: ScoreEmit, states: Sequence[tuple[str, dict[str, dict[str, int]]]]
    ) -> Aggregate:
        """``aggregate_stream`` given score columns and each shard's corpus states (see ``folds_scores``). Only
        the evaluation step's model-free pass writes them, so no response was generated."""
        presets = self._presets()
        corpus = [preset for preset in presets if preset.needs_texts]
        wanted = sorted({preset.metric.value for preset in corpus})
        for uri, shard_states in states:  # integer sums: the same in any order
            if sorted(shard_states) != wanted:
                raise RuntimeError(
                    f"{uri}: corpus states of {sorted(shard_states)}, but the metrics need {wanted}; "
                    "the shard was scored for other metrics"
                )
            for preset in corpus:
                try:
                    preset.add_state(shard_states[preset.metric.value])
                except ValueError as err:
                    raise RuntimeError(f"{uri}: corpus state {preset.metric.value!r}: {err}") from None
        agg = _new_aggregate()
        for block in blocks:
            for preset in presets:
                preset.add_scores(block.scores)
            emit(block.records, block.lines, block.scores)
        self._add_presets(agg, presets)
        return agg

    def _add_presets(self, agg: Aggregate, presets: list[PresetScorer]) -> None:
        for preset in presets:
            self._add(agg, preset.metric, preset.result(), preset.stderr())

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


def _new_aggregate() -> Aggregate:
    return Aggregate(metrics={}, details={"signatures": {}, "generated_responses": 0})


def _block_scorer(spec: EvaluationSpec, role: str) -> Callable[[RecordBlock], ScoredBlock]:
    """``run_block`` of a task made in a block pool's worker (see ``ScorerTask.scored_blocks``)."""
    task = ScorerTask(spec, role)
    task.in_block_worker = True
    return task.run_block


@dataclass
class _Columns:
    """A chunk's records column by column, before they are scored."""

    lines: Sequence[int]
    prompts: Sequence[str | None]
    responses: Sequence[str]
    generated: Sequence[bool]
    references: Sequence[Any]
    metadata: Sequence[dict[str, Any]] | None  # None: every record's is empty

    def records(self, samples: list[dict[str, list[float]]]) -> list[dict[str, Any]]:
        """The records; ``samples`` holds each preset's per-sample values a column per key (a later preset's
        win)."""
        records = [
            {
                "id": item_id(line),
                "subtask": None,
                "line": line,
                "prompt": prompt,
                "response": response,
                "generated": generated,
                "reference": reference,
                "metadata": metadata,
                "scores": {},
            }
            for line, prompt, response, generated, reference, metadata in zip(
                self.lines, self.prompts, self.responses, self.generated, self.references, self._dicts(), strict=True
            )
        ]
        for columns in samples:
            for key, values in columns.items():
                for record, value in zip(records, values, strict=False):
                    record["scores"][key] = value
        return records

    def encoded(self, samples: list[dict[str, list[float]]], scores: dict[str, list[float]] | None) -> bytes:
        """``streamed_line`` of every record, in one piece. A plain chunk (text fields all strings, scores
        all finite floats under the same keys, given as ``scores`` (``_score_columns``), metadata orjson
        encodes) fills one line template per record from columns each encoded by one orjson call; any
        other chunk is encoded record by record."""
        plain = self._plain(scores) if orjson is not None and scores is not None and self.lines else None
        texts = [self._texts(column) for column in (self.prompts, self.references, self.responses)] if plain else []
        metadata = self._metadata() if plain else None
        if plain is None or metadata is None or any(column is None for column in texts):
            return b"".join(map(streamed_line, self.records(samples)))
        template, score_texts = plain
        flags = [b"true" if flag else b"false" for flag in self.generated]
        rows = zip(flags, self.lines, self.lines, metadata, *texts, *score_texts, strict=True)
        return b"".join(map(template.__mod__, rows))

    @staticmethod
    def _plain(scores: dict[str, list[float]]) -> tuple[bytes, list[list[bytes]]]:
        """The line template and the encoded score columns."""
        encoded = [orjson.dumps(values)[1:-1].split(b",") for values in scores.values()]
        score_fields = b",".join(orjson.dumps(key).replace(b"%", b"%%") + b":%s" for key in scores)
        template = (
            # "line-%d": item_id(line), as in records(); equal bytes are tested (tests/test_block_reader.py)
            b'{"generated":%s,"id":"line-%d","line":%d,"metadata":%s,"prompt":"%s","reference":"%s",'
            b'"response":"%s","scores":{' + score_fields + b'},"subtask":null}\n'
        )
        return template, encoded

    def _metadata(self) -> list[bytes] | None:
        """Each record's metadata encoded, or None where orjson cannot (json then writes the record)."""
        if self.metadata is None or not any(self.metadata):
            return [b"{}"] * len(self.lines)
        try:
            return list(map(partial(orjson.dumps, option=orjson.OPT_SORT_KEYS), self.metadata))
        except TypeError:
            return None

    def _dicts(self) -> Sequence[dict[str, Any]]:
        return self.metadata if self.metadata is not None else [{} for _ in self.lines]

    @staticmethod
    def _texts(values: Sequence[Any]) -> list[bytes] | None:
        """Each string's JSON encoding without its quotes, from one orjson call; None unless all are strings.
        The list's encoding is split at its separators, '","': a string's own quotes are escaped, and a
        split that finds more pieces than strings (an escaped quote before a comma) is not used."""
        if set(map(type, values)) != {str}:
            return None
        pieces = orjson.dumps(values)[2:-2].split(b'","')
        return pieces if len(pieces) == len(values) else None


def _score_columns(samples: list[dict[str, list[float]]], n: int) -> dict[str, list[float]] | None:
    """The ``n`` records' scores a column per key, sorted (a later preset's win, as in ``_Columns.records``),
    when every record has a finite float score under every key; else None."""
    merged: dict[str, list[float]] = {}
    for columns in samples:
        if not n or any(len(values) != n for values in columns.values()):
            return None
        merged.update(columns)
    for values in merged.values():
        if set(map(type, values)) != {float} or not all(map(math.isfinite, values)):
            return None
    return {key: merged[key] for key in sorted(merged)}


def _rechunked(blocks: Iterable[MergedBlock], size: int) -> Iterator[MergedBlock]:
    """The blocks' records and lines again in chunks of ``size`` (the last one shorter): a chunk is the
    same whatever the blocks, so results are too (1 or N shards)."""
    records: list[dict[str, Any]] = []
    lines: list[bytes | None] = []
    for block_records, block_lines in blocks:
        if not records and len(block_records) == size:
            yield block_records, block_lines
            continue
        records += block_records
        lines += block_lines
        while len(records) >= size:
            yield records[:size], lines[:size]
            del records[:size], lines[:size]
    if records:
        yield records, lines


def _metadata(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"prompt": r["prompt"], "line": r["line"], **r["metadata"]} for r in records]
