"""Per-sample model time, kept beside the records: ``sample_timings.jsonl`` next to ``samples.jsonl``.

Wall time never goes into samples.jsonl (reruns and 1-vs-N-shard merges must stay byte-identical),
so it travels on a side path:

1. The EvaluateModel step wraps the evaluated model in :class:`TimedModel`. Each answer it hands
   to the task (a text, or a log-likelihood's number) is a ``str``/``float`` subclass carrying the
   :class:`~evalstack.models.request_timing.RequestTime` of its request, as the dispatcher measured
   it. Tasks put those answers into their records unchanged, so a record's timed values say which
   requests the sample used, with no change to any task and with the backend's batching intact.
2. :class:`ShardTimer` reads them off each chunk's records (before the records are serialised, when
   the values become plain JSON again) and writes ``sample_timings/<role>/shard-<i>-of-<n>.jsonl``:
   one row per sample that asked the model, with its item index.
3. The Report step merges the shards in item order and checks each row's id against its line of
   samples.jsonl, writing ``sample_timings.jsonl`` (id, line, seconds, requests, cached), atomically.
   An empty file means no sample asked the model (the answers came from the dataset).

A sample's ``seconds`` is the sum of its requests' times (from first send to answer, retries
included; 0 for a cached answer). Its requests run concurrently with other samples', so this is the
model time spent on the sample, not a share of the step's wall time. ``seconds`` is null when the
backend does not time single requests (the local transformers backend batches forward passes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalstack import storage
from evalstack.models.base import GenerateRequest, Loglikelihood, LoglikelihoodRequest, ModelBackend
from evalstack.models.request_timing import RequestTime, collecting

FILE_NAME = "sample_timings.jsonl"
_SHARD_NAME = re.compile(r"/shard-\d{5}-of-\d{5}\.jsonl$")
log = logging.getLogger(__name__)


class TimedText(str):
    """A generated text that knows how long its request took (None: not measured)."""

    timing: RequestTime | None = None


class TimedNumber(float):
    """A log-likelihood that knows how long its request took (None: not measured)."""

    timing: RequestTime | None = None


def _tagged(value: Any, kind: type, timing: RequestTime | None) -> Any:
    tagged = kind(value)
    tagged.timing = timing
    return tagged


def _per_request(batches: list[list[RequestTime]], count: int) -> Sequence[RequestTime | None]:
    """The times of one call's ``count`` requests: every batch it ran, when they add up to one wire
    request per request, else its last batch (an earlier one may be a capability probe); None when
    the backend ran no dispatcher batch of that shape (it does not time single requests)."""
    flat = [t for batch in batches for t in batch]
    if len(flat) == count:
        return flat
    if batches and len(batches[-1]) == count:
        return batches[-1]
    return [None] * count


class TimedModel:
    """The evaluated model; its answers carry their request times. Everything else is the model's own."""

    def __init__(self, inner: ModelBackend) -> None:
        self._inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        self.calls += 1
        with collecting() as batches:
            texts = self._inner.generate(requests)
        times = _per_request(batches, len(requests))
        return [_tagged(text, TimedText, t) for text, t in zip(texts, times, strict=True)]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        self.calls += 1
        with collecting() as batches:
            results = self._inner.loglikelihood(requests)
        times = _per_request(batches, len(requests))
        return [
            dataclasses.replace(r, logprob=_tagged(r.logprob, TimedNumber, t))
            for r, t in zip(results, times, strict=True)
        ]


@dataclass(frozen=True)
class SampleTime:
    requests: int
    cached: int
    seconds: float | None


def _timed_values(value: Any, found: dict[int, RequestTime | None]) -> None:
    if isinstance(value, TimedText | TimedNumber):
        found[id(value)] = value.timing  # one request's answer may appear twice in a record
    elif isinstance(value, dict):
        for inner in value.values():
            _timed_values(inner, found)
    elif isinstance(value, list | tuple):
        for inner in value:
            _timed_values(inner, found)


def sample_time(record: dict[str, Any]) -> SampleTime | None:
    """The model time of the requests whose answers the record holds; None when it holds none."""
    found: dict[int, RequestTime | None] = {}
    _timed_values(record, found)
    if not found:
        return None
    times = list(found.values())
    measured = None if any(t is None for t in times) else sum(t.seconds for t in times if t is not None)
    return SampleTime(len(times), sum(1 for t in times if t is not None and t.cached), measured)


def shard_prefix(records_uri: str, role: str) -> str:
    return storage.join(records_uri, "sample_timings", role)


def shard_uri(records_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(shard_prefix(records_uri, role), f"shard-{index:05d}-of-{count:05d}.jsonl")


@dataclass
class ShardTimer:
    """One shard's sample times. Rows are kept in memory: there is one per sample that asked the
    model (about 100 bytes each), so they grow with the model calls made, never with the dataset."""

    shard_index: int
    shard_count: int
    model: TimedModel | None = None
    _position: int = 0
    _rows: list[str] = field(default_factory=list)

    def wrap(self, model: ModelBackend) -> ModelBackend:
        self.model = TimedModel(model)
        return self.model  # type: ignore[return-value]

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        """The next records of the shard, in its item order (item ``shard_index + k * shard_count``)."""
        for record in records:
            index = self.shard_index + self._position * self.shard_count
            self._position += 1
            timing = sample_time(record)
            if timing is not None:
                row = {"index": index, "id": record["id"], **dataclasses.asdict(timing)}
                self._rows.append(json.dumps(row, sort_keys=True) + "\n")

    def write(self, records_uri: str, role: str, kms_key_id: str | None = None) -> str:
        if self.model is not None and self.model.calls and not self._rows:
            log.warning("the model was called but no record holds a timed answer: no sample times for this shard")
        uri = shard_uri(records_uri, role, self.shard_index, self.shard_count)
        storage.write_text_keeping_first(uri, "".join(self._rows), kms_key_id=kms_key_id)
        return uri


def _shard_rows(uri: str) -> Iterator[dict[str, Any]]:
    with storage.open_text(uri) as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def merge_sample_timings(records_uri: str, role: str, role_output_uri: str, kms_key_id: str | None = None) -> None:
    """Write ``<role_output_uri>/sample_timings.jsonl`` from the role's shards, in item order; each row
    checked against its line of samples.jsonl. Nothing is written when no shard recorded times."""
    shards = [u for u in storage.list_uris(shard_prefix(records_uri, role)) if _SHARD_NAME.search(u)]
    if not shards:
        return
    samples_uri = storage.join(role_output_uri, "samples.jsonl")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="evalstack-timings-") as folder:
        rows = heapq.merge(*(_shard_rows(u) for u in sorted(shards)), key=lambda r: r["index"])
        lines = enumerate(stack.enter_context(storage.open_text(samples_uri)), start=1)
        path = Path(folder, FILE_NAME)
        with path.open("w", encoding="utf-8") as out:
            for row in rows:
                line = row.pop("index") + 1
                number, text = next(lines, (None, ""))
                while number is not None and number < line:
                    number, text = next(lines, (None, ""))
                if number != line or json.loads(text).get("id") != row["id"]:
                    raise RuntimeError(
                        f"{samples_uri}: line {line} is not sample {row['id']!r} that "
                        f"{shard_prefix(records_uri, role)} timed; the records and timings are of different runs"
                    )
                out.write(json.dumps({**row, "line": line}, sort_keys=True) + "\n")
        storage.upload_file(path, storage.join(role_output_uri, FILE_NAME), kms_key_id=kms_key_id)


# -- reading, for the report -------------------------------------------------------------------------


@dataclass(frozen=True)
class SlowSample:
    id: str
    line: int
    seconds: float
    requests: int
    cached: int


@dataclass
class TimingDigest:
    """What sample_timings.jsonl says: how many samples asked the model, how many were timed, and the
    ``listed`` slowest (most model seconds first, then file order)."""

    answered: int = 0
    measured: int = 0
    cached_only: int = 0
    slowest: list[SlowSample] = field(default_factory=list)


def digest_timings(lines: Iterable[str], listed: int) -> TimingDigest:
    return _digest_rows((json.loads(line) for line in lines if line.strip()), listed)


def shard_timings(records_uri: str, role: str, listed: int) -> TimingDigest | None:
    """The digest that ``merge_sample_timings`` will write, read from the role's shards (each row's line
    is its item index + 1), so the Report step knows the slowest lines before it writes samples.jsonl."""
    shards = [u for u in storage.list_uris(shard_prefix(records_uri, role)) if _SHARD_NAME.search(u)]
    if not shards:
        return None
    rows = ({**row, "line": row["index"] + 1} for uri in shards for row in _shard_rows(uri))
    return _digest_rows(rows, listed)


def _digest_rows(rows: Iterable[dict[str, Any]], listed: int) -> TimingDigest:
    digest = TimingDigest()
    heap: list[tuple[float, int, SlowSample]] = []
    for row in rows:
        digest.answered += 1
        if row["requests"] and row["cached"] == row["requests"]:
            digest.cached_only += 1
        if row["seconds"] is None:
            continue
        digest.measured += 1
        sample = SlowSample(str(row["id"]), int(row["line"]), float(row["seconds"]), row["requests"], row["cached"])
        entry = (sample.seconds, -sample.line, sample)
        if len(heap) < listed:
            heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
            heapq.heapreplace(heap, entry)
    digest.slowest = [entry[-1] for entry in sorted(heap, key=lambda e: e[:2], reverse=True)]
    return digest


def read_timings(role_output_uri: str, listed: int) -> TimingDigest | None:
    """The digest of a role's sample_timings.jsonl; None when the execution recorded none."""
    uri = storage.join(role_output_uri, FILE_NAME)
    if not storage.exists(uri):
        return None
    with storage.open_text(uri) as lines:
        return digest_timings(lines, listed)
