"""The contract between the engine and what it runs: benchmarks, judges and scorers.

A task lists its items, runs a slice of them against a model (producing one JSON-able record
per item), and aggregates records into metrics. Aggregation reads records only, so the Report
step can merge shards that ran on different instances and get the one-instance answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evalstack.models.base import ModelBackend

# The Report step's merged records in item order, a block at a time: the records and, for each, its
# samples.jsonl line when the shard file already holds it (else None).
MergedBlock = tuple[list[dict[str, Any]], list[bytes | None]]


@dataclass(frozen=True)
class ScoredBlock:
    """A block of an evaluation step's model-free pass: how many items, their ids each followed by a newline
    (UTF-8), their records as records-file lines, their scores a column per key (sorted) when every
    record's are finite floats under the same keys, else None, and the block's corpus state per corpus
    metric (F1, BLEU: named integer sums, which add up across blocks and shards)."""

    count: int
    ids: bytes
    lines: bytes
    scores: dict[str, Sequence[float]] | None
    corpus: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ScoreBlock:
    """The Report step's merged block when the shards' score columns stand in for their records: the
    records' samples.jsonl lines (a piece of bytes per line, or one piece of whole lines for the block), the
    scores a column per key, and ``records``, which parses a line only when one is asked for (e.g. a sample
    the report page lists)."""

    records: Sequence[dict[str, Any]]
    lines: list[bytes]
    scores: dict[str, Sequence[float]]


@dataclass(frozen=True)
class Item:
    """One unit of evaluation. ``id`` is stable across runs and unique within the task."""

    id: str
    subtask: str | None
    data: dict[str, Any]


@dataclass
class Aggregate:
    """Metrics over a set of records.

    ``subtasks`` maps subtask name to its metrics; ``details`` holds what a reader needs to
    trust the numbers (scoring mode, parse failures, library signatures).
    """

    metrics: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)
    confidence_intervals: dict[str, list[float]] = field(default_factory=dict)
    subtasks: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # Per-sample scores that exist only once every record is seen (item id -> metric -> value);
    # the report merges them into samples.jsonl.
    sample_scores: dict[str, dict[str, float]] = field(default_factory=dict)


class EvalTask(Protocol):
    @property
    def needs_model(self) -> bool:
        """False when every answer is already in the data (e.g. a dataset with responses)."""
        ...

    def items(self) -> list[Item]:
        """Every item to evaluate, in a deterministic order, after any limit."""
        ...

    def dataset_sha256(self) -> str: ...

    def run(self, items: Sequence[Item], model: ModelBackend | None) -> list[dict[str, Any]]:
        """One record per item, in order. Each record has ``id``, ``subtask`` and ``scores``
        (metric name -> float), plus whatever aggregation and the sample file need."""
        ...

    def aggregate(self, records: Sequence[dict[str, Any]]) -> Aggregate: ...


class ModelNeeded(ValueError):
    """Raised by ``run`` given no model for an item whose answer is not in the data."""


@runtime_checkable
class StreamingTask(Protocol):
    """A task whose items and records stream: memory is set by the chunk size, never by the dataset.

    The engine streams items into ``run`` chunk by chunk, and in the Report step passes the merged
    records in item order to ``aggregate_stream`` in blocks (``MergedBlock``), which it folds into online
    state and hands on, a block at a time with their final scores, to ``emit`` (samples.jsonl). Each
    record travels with its samples.jsonl line when the shard file already holds it (else None), so an
    unchanged record is copied, not encoded again. Tasks without these methods get ``items()`` and
    ``aggregate(records)`` with lists.
    """

    def iter_items(self) -> Iterator[Item]: ...

    def item_count(self) -> int: ...

    def scan(self) -> Any:
        """What one validating pass over the items learned, made once and then kept (for a dataset, an
        ``evalstack.data.DatasetSummary``: a layer this contract does not import)."""
        ...

    @property
    def answers_in_data(self) -> bool:
        """Whether the items may carry their answers before the dataset is read: the engine then scores
        in the one pass that reads it, without a model, until ``run`` raises ``ModelNeeded``."""
        ...

    def progress_estimate(self) -> float | None:
        """During a pass of ``iter_items`` (or ``scored_blocks``), the part of the dataset read so far (0 to 1),
        if known."""
        ...

    def scored_blocks(self, shard_index: int, shard_count: int) -> Iterator[ScoredBlock]:
        """One pass scoring without a model the items ``i`` with ``i % shard_count == shard_index``, in
        blocks (``ScoredBlock``); raises ``ModelNeeded`` as ``run`` does."""
        ...

    @property
    def folds_scores(self) -> bool:
        """Whether the metrics are folded from the records' scores and the corpus states alone (no custom
        scorer): the Report step may then call ``aggregate_scores`` with the shards' score columns."""
        ...

    def aggregate_scores(
        self,
        blocks: Iterable[ScoreBlock],
        emit: Callable[[Sequence[dict[str, Any]], list[bytes], Any], None],
        states: Sequence[tuple[str, dict[str, dict[str, int]]]],
    ) -> Aggregate:
        """``aggregate_stream`` given score columns and each shard's corpus states (``ScoredBlock.corpus``
        summed, with the file that holds them, named when they are not the metrics'): the same aggregate,
        and the same blocks to ``emit`` (records, lines and score columns)."""
        ...

    def aggregate_stream(
        self,
        blocks: Iterable[MergedBlock],
        emit: Callable[[list[dict[str, Any]], list[bytes | None]], None],
        *,
        count: int | None = None,
    ) -> Aggregate: ...
