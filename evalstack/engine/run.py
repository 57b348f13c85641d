"""Run a spec: evaluate shards of items against a model, then merge them into a report.

The same two calls serve the pipeline's Processing steps (one shard per instance) and the
in-process path used by tests and the CLI, so a sharded run and a one-shot run share every line.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from evalstack import storage
from evalstack.catalog.hyperparameters import request_concurrency
from evalstack.data.text_rows import HashedLines
from evalstack.engine.score_columns import ScoreColumnsReader, ScoreColumnsWriter, States
from evalstack.engine.serving import add_serving, record_serving
from evalstack.engine.tasks import build_task, model_reference, primary_metric
from evalstack.models import cached_backend
from evalstack.results.headline import headline, with_headline
from evalstack.results.sample_digest import LISTED, BaseScores, SampleDigest, SampleDigester
from evalstack.results.sample_digest import primary_metric as listed_metric
from evalstack.results.sample_timings import ShardTimer, merge_sample_timings, shard_timings
from evalstack.results.writer import (
    CALL_DETAIL_KEYS,
    EvaluationResult,
    SamplesFile,
    dumps,
    render_report,
    role_files,
    streamed_line,
)
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, EvalTask, Item, MergedBlock, ModelNeeded, ScoreBlock, StreamingTask

try:  # optional: without it shard records are read with json
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the installed extras
    _fast_loads = None

PROGRESS_CHUNK = 256
SCORING_CHUNK = 4096
# Items between progress writes of a pass that scores without a model (blocks of a few thousand items).
PROGRESS_ITEMS = 65536
MERGE_BLOCK = 1024  # items the Report step's merge reads and parses at once, over all shards
SCORE_MERGE_BLOCK = 8192  # items it reads at once when it copies their lines (``verified_scores``)
COPY_BLOCK_BYTES = 2 * 1024**2  # bytes it copies at once from a single shard (``_copied``)
_ID = itemgetter("id")
GC_YOUNG_OBJECTS = 50_000  # see _young_collections
PROGRESS_NAME = re.compile(r"/shard-\d{5}-of-\d{5}\.json$")
SHARD_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})\.jsonl$")


def records_prefix(output_uri: str, role: str) -> str:
    return storage.join(output_uri, "records", role)


def shard_uri(output_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(records_prefix(output_uri, role), f"shard-{index:05d}-of-{count:05d}.jsonl")


def role_uri(output_uri: str, role: str) -> str:
    return output_uri if role == "candidate" else storage.join(output_uri, role)


def run_shard(
    spec: EvaluationSpec,
    role: str,
    shard_index: int,
    shard_count: int,
    output_uri: str,
    *,
    task: EvalTask | None = None,
) -> str:
    """Evaluate items ``i`` with ``i % shard_count == shard_index``; write their records atomically.

    Records go to a local file as they are made and are uploaded once complete: memory holds one chunk.
    After each chunk the shard's progress file says how far it got (`evalstack evaluate` shows it as a
    progress bar). A task whose answers may all be in its data is scored in the one pass that reads
    it; the first item that needs a model ends that attempt, and the items are then counted (which
    validates every one before any model call) and streamed again.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard index {shard_index} is outside 0..{shard_count - 1}")
    task = task or build_task(spec, role)
    shard = _Shard(spec, role, shard_index, shard_count, output_uri)
    timer = ShardTimer(shard_index, shard_count)  # per-sample model time: sample_timings.py
    with tempfile.TemporaryDirectory(prefix="evalstack-shard-") as folder:
        path = Path(folder, "records.jsonl")
        ids = hashlib.sha256()  # of the items this shard was given: the Report step checks records against it
        passed = _one_pass(task, shard, path, ids) if isinstance(task, StreamingTask) and task.answers_in_data else None
        scores = None
        if passed is None:
            ids = hashlib.sha256()
            count = _with_model(task, shard, path, ids, timer)
        else:
            count, scores = passed
        # Both before the records, whose presence marks a finished shard.
        timer.write(output_uri, role, spec.kms_key_id)
        uri = shard_uri(output_uri, role, shard_index, shard_count)
        if isinstance(task, StreamingTask):  # so the Report step need not read the dataset again
            manifest = ShardManifest(items=count, dataset_sha256=task.dataset_sha256(), ids_sha256=ids.hexdigest())
            manifest_file = manifest_uri(output_uri, role, shard_index, shard_count)
            storage.write_text(manifest_file, json.dumps(asdict(manifest)), kms_key_id=spec.kms_key_id)
        if scores is not None:
            columns_uri = score_columns_uri(output_uri, role, shard_index, shard_count)
            storage.upload_file(scores, columns_uri, kms_key_id=spec.kms_key_id)
        storage.upload_file(path, uri, kms_key_id=spec.kms_key_id)
    return uri


@dataclass(frozen=True)
class _Shard:
    spec: EvaluationSpec
    role: str
    index: int
    count: int
    output_uri: str

    def items(self, every: Iterable[Item], ids: Any) -> Iterator[Item]:
        """This shard's items of ``every``, hashing their ids into ``ids`` on the way."""
        return _hashed_ids(islice(every, self.index, None, self.count), ids.update)

    def report_progress(self, done: int, total: int) -> None:
        storage.write_text(
            progress_uri(self.output_uri, self.role, self.index, self.count),
            json.dumps({"done": done, "total": total}),
            kms_key_id=self.spec.kms_key_id,
            replace=True,  # rewritten after every chunk: the one output that is not write-once
        )


def _one_pass(task: StreamingTask, shard: _Shard, path: Path, ids: Any) -> tuple[int, Path | None] | None:
    """Score every item of the shard without a model while reading the dataset once; the item count and
    the shard's score columns file (None when the scores are not columns, see ``score_columns``), or None
    as soon as an item needs a model (``path`` then holds a partial file to be rewritten).

    The dataset comes in blocks, scored and encoded a column at a time (``StreamingTask.scored_blocks``), each
    with its corpus states, summed into the score columns file's header."""
    done = reported = 0
    blocks = task.scored_blocks(shard.index, shard.count)
    written = hashlib.sha256()  # of the records file: its score columns name it
    columns = ScoreColumnsWriter(path.parent)
    # closing: the dataset, if abandoned
    with contextlib.closing(blocks), contextlib.closing(columns), path.open("wb") as out:
        try:
            for block in blocks:
                ids.update(block.ids)
                out.write(block.lines)
                written.update(block.lines)
                columns.add(block.count, block.scores, block.corpus)
                done += block.count
                del block  # before the next block is read, so only one is ever held
                if done >= reported + PROGRESS_ITEMS:  # a write (and fsync) per block costs more than scoring it
                    reported = done
                    # The count is known only at the end of the pass: until then, estimated from the part read.
                    part = task.progress_estimate()
                    shard.report_progress(done, max(done, round(done / part)) if part else done)
        except ModelNeeded:
            return None
        count = task.item_count()  # known now: the pass was complete
        shard.report_progress(done, done)
        return count, columns.finish(written.hexdigest())


def _with_model(task: EvalTask, shard: _Shard, path: Path, ids: Any, timer: ShardTimer) -> int:
    """Count the items (a streaming task validates every one on the way), then run the shard's items
    in chunks big enough to keep every connection of the model busy; the item count."""
    spec = shard.spec
    count, every = _items(task)
    total = len(range(shard.index, count, shard.count))
    items = shard.items(every, ids)
    concurrency = request_concurrency(spec.hyperparameters)
    needs_model = task.needs_model and total > 0
    # Without a model a chunk is only scoring work, so chunks are larger and progress writes fewer.
    chunk = max(PROGRESS_CHUNK, 8 * concurrency) if needs_model else SCORING_CHUNK
    done = 0
    encode = streamed_line if isinstance(task, StreamingTask) else _record_line
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(path.open("wb"))
        model = None
        if needs_model:
            model = stack.enter_context(cached_backend(model_reference(spec, shard.role), max_concurrency=concurrency))
            prefix = records_prefix(shard.output_uri, shard.role)
            record_serving(prefix, shard.index, shard.count, model, kms_key_id=spec.kms_key_id)
            model = timer.wrap(model)
        while batch := list(islice(items, chunk)):
            records = task.run(batch, model)
            if model is not None:  # only model answers carry times; walking scored records would cost
                timer.add(records)
            out.writelines(map(encode, records))
            done += len(records)
            del batch, records  # before the next chunk is read, so only one is ever held
            shard.report_progress(done, total)
    return count


def _record_line(record: dict[str, Any]) -> bytes:
    """A records line of a task that is not streamed: json, as its Report step reads it."""
    return json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"


def _hashed_ids(items: Iterable[Item], update: Callable[[bytes], None]) -> Iterator[Item]:
    for item in items:
        update(item.id.encode("utf-8") + b"\n")
        yield item


def _items(task: EvalTask) -> tuple[int, Iterator[Item]]:
    """How many items the task has, and the items: streamed when the task can (see ``StreamingTask``)."""
    if isinstance(task, StreamingTask):
        return task.item_count(), task.iter_items()
    items = task.items()
    return len(items), iter(items)


def progress_uri(output_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(output_uri, "progress", role, f"shard-{index:05d}-of-{count:05d}.json")


def read_progress(output_uri: str) -> tuple[int, int]:
    """Items done and items known, summed over every shard and role that has reported so far."""
    done = total = 0
    for uri in storage.list_uris(storage.join(output_uri, "progress")):
        if not PROGRESS_NAME.search(uri):  # e.g. a temporary file of a write in progress
            continue
        figures = json.loads(storage.read_text(uri))
        done, total = done + figures["done"], total + figures["total"]
    return done, total


def shard_uris(output_uri: str, role: str) -> list[str]:
    """Every shard's records file, in shard order; fails if a shard is missing or shard counts disagree."""
    found: dict[int, str] = {}
    counts = set()
    for uri in storage.list_uris(records_prefix(output_uri, role)):
        match = SHARD_NAME.search(uri)
        # Only shard files directly under the prefix: S3 outputs are write-once, but another execution's
        # job code can still add keys, e.g. records/<role>/x/shard-00000-of-00001.jsonl.
        if match and uri == storage.join(records_prefix(output_uri, role), match.group(0)):
            found[int(match.group(1))] = uri
            counts.add(int(match.group(2)))
    if len(counts) != 1:
        raise RuntimeError(
            f"{records_prefix(output_uri, role)}: expected shards of one run, found counts {sorted(counts)}"
        )
    (count,) = counts
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise RuntimeError(f"{records_prefix(output_uri, role)}: missing shard(s) {missing} of {count}")
    return [found[index] for index in range(count)]


def read_records(output_uri: str, role: str) -> list[dict[str, Any]]:
    """Every shard's records, shard after shard (for tasks that aggregate lists)."""
    records: list[dict[str, Any]] = []
    for uri in shard_uris(output_uri, role):
        records.extend(json.loads(line) for line in storage.read_text(uri).splitlines() if line)
    return records


@dataclass(frozen=True)
class ShardManifest:
    """What an evaluate shard of a streaming task learned in its one pass over the dataset, written
    beside its records: the Report step merges and checks the shards with it instead of re-reading."""

    items: int  # the task's items over every shard
    dataset_sha256: str
    ids_sha256: str  # of this shard's item ids in order, each followed by a newline


def manifest_uri(output_uri: str, role: str, index: int, count: int) -> str:
    """Outside the records folder, which holds only records files."""
    return storage.join(output_uri, "manifests", role, f"shard-{index:05d}-of-{count:05d}.json")


def score_columns_uri(output_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(output_uri, "scores", role, f"shard-{index:05d}-of-{count:05d}.bin")


def _read_manifest(uri: str) -> ShardManifest:
    try:
        raw = json.loads(storage.read_text(uri))
    except FileNotFoundError:
        raise RuntimeError(f"{uri}: missing; the shard's evaluate step did not record its items") from None
    except json.JSONDecodeError as err:
        raise RuntimeError(f"{uri}: invalid JSON: {err.msg} (line {err.lineno})") from None
    names = [f.name for f in fields(ShardManifest)]
    if not isinstance(raw, dict) or sorted(raw) != sorted(names):
        raise RuntimeError(f"{uri}: expected an object with exactly the fields {names}")
    manifest = ShardManifest(**raw)
    if not isinstance(manifest.items, int) or isinstance(manifest.items, bool) or manifest.items < 0:
        raise RuntimeError(f"{uri}: field 'items': expected a count, got {manifest.items!r}")
    return manifest


def verified_records(output_uri: str, role: str) -> tuple[ShardManifest, Iterator[MergedBlock]]:
    """The shards' records in item order, streamed in blocks and checked against the shards' manifests (no
    dataset read): every shard saw the same dataset and item count, holds exactly its share of the
    items, and its record ids are those of the items it was given, in order. A failed check raises
    naming the shard file; the id check runs once the records are consumed, before the last returns.

    Each record comes with its shard line when that line is already the record's samples.jsonl line
    (see ``streamed_line``), else None: a block is the records and those lines (``MergedBlock``)."""
    uris, manifests = _shard_manifests(output_uri, role)
    return manifests[0], _verified_merge(uris, manifests, manifests[0].items)


def verified_scores(
    output_uri: str, role: str
) -> tuple[ShardManifest, Iterator[ScoreBlock], list[tuple[str, States]]] | None:
    """``verified_records`` from the shards' score columns files (see ``score_columns``) and their records'
    lines, which are copied, not parsed (``ScoreBlock``), with each file's corpus states; None when a shard
    has no such file. The same checks, but for the record ids: each shard's lines are checked, as they are
    read, to be the records file its columns (and states) were written with."""
    uris, manifests = _shard_manifests(output_uri, role)
    columns = [score_columns_uri(output_uri, role, index, len(uris)) for index in range(len(uris))]
    if not all(map(storage.exists, columns)):
        return None
    states = []
    for uri in columns:  # the headers only; the merge reads the files again
        with storage.open_binary(uri) as handle:
            states.append((uri, ScoreColumnsReader(handle, uri).corpus))
    return manifests[0], _verified_score_merge(uris, columns, manifests[0].items), states


def _shard_manifests(output_uri: str, role: str) -> tuple[list[str], list[ShardManifest]]:
    """The role's shard files and their manifests, checked to have read the same data."""
    uris = shard_uris(output_uri, role)
    names = [manifest_uri(output_uri, role, index, len(uris)) for index in range(len(uris))]
    manifests = [_read_manifest(name) for name in names]
    first = manifests[0]
    for name, manifest in zip(names, manifests, strict=True):
        if (manifest.items, manifest.dataset_sha256) != (first.items, first.dataset_sha256):
            raise RuntimeError(
                f"{name}: {manifest.items} items of dataset sha256 {manifest.dataset_sha256}, but "
                f"{names[0]} has {first.items} of {first.dataset_sha256}; the shards read different data"
            )
    return uris, manifests


def _shard_reads(uris: list[str], items: int, block_items: int) -> Iterator[list[list[bytes]]]:
    """The shards' lines a block of about ``block_items`` items at a time, per shard: item ``i`` is line
    ``i // count`` of shard ``i % count``, so a round-robin over the shard files is the merge (every block
    is whole rounds, so starts at shard 0). Raises naming the shard file when one has too few or too many
    lines."""
    count = len(uris)
    block = max(block_items // count, 1) * count
    with contextlib.ExitStack() as stack:
        shards = [_lines(stack.enter_context(storage.open_binary(uri))) for uri in uris]
        for start in range(0, items, block):
            size = min(block, items - start)
            wanted = [(size - shard + count - 1) // count for shard in range(count)]  # this block's, per shard
            reads = [list(islice(lines, n)) for lines, n in zip(shards, wanted, strict=True)]
            missing = [
                start + shard + len(read) * count for shard, read in enumerate(reads) if len(read) < wanted[shard]
            ]
            if missing:
                position = min(missing)
                raise RuntimeError(
                    f"{uris[position % count]}: no record where item {position} belongs; "
                    "shard records do not cover the items exactly once"
                )
            yield reads
        _no_extra_records(uris, shards)


def _verified_merge(uris: list[str], manifests: list[ShardManifest], items: int) -> Iterator[MergedBlock]:
    """The merge of ``_shard_reads``, MERGE_BLOCK items at a time (that many lines held over all shards),
    each block yielded whole: per block, each shard's lines are parsed in one call each and interleaved
    by one more, so at millions of records no Python step runs per record."""
    count = len(uris)
    digests = [hashlib.sha256() for _ in uris]
    for reads in _shard_reads(uris, items, MERGE_BLOCK):
        parsed = list(map(_parsed_block, reads))
        for digest, (records, _) in zip(digests, parsed, strict=True):
            if records:
                digest.update(_joined_ids(records))
        if count == 1:
            yield parsed[0]
        else:
            yield _interleaved([r for r, _ in parsed]), _interleaved([c for _, c in parsed])
    for uri, digest, manifest in zip(uris, digests, manifests, strict=True):
        if digest.hexdigest() != manifest.ids_sha256:
            raise RuntimeError(
                f"{uri}: record ids are not those of the items the shard was given; "
                "shard records do not cover the items exactly once"
            )


def _verified_score_merge(uris: list[str], columns: list[str], items: int) -> Iterator[ScoreBlock]:
    """The merge of ``_shard_reads`` with each shard's score columns beside its lines, SCORE_MERGE_BLOCK
    items at a time (lines are only copied, so blocks are larger than MERGE_BLOCK's); a single shard's is
    ``_copied``'s. Each shard's records are checked to be those its columns were written with."""
    count = len(uris)
    with contextlib.ExitStack() as stack:
        readers = [ScoreColumnsReader(stack.enter_context(storage.open_binary(uri)), uri) for uri in columns]
        for shard, reader in enumerate(readers):
            if reader.keys != readers[0].keys or reader.items != len(range(shard, items, count)):
                raise RuntimeError(
                    f"{reader.uri}: scores {reader.keys} of {reader.items} items, but the shard has "
                    f"{len(range(shard, items, count))} items scored as {readers[0].keys} ({readers[0].uri})"
                )
        if count == 1:  # the file is samples.jsonl as it is: copied in blocks, never cut into lines
            sha256s = [(yield from _copied(uris[0], items, readers[0]))]
        else:
            digests = [hashlib.sha256() for _ in uris]
            keys = readers[0].keys
            for reads in _shard_reads(uris, items, SCORE_MERGE_BLOCK):
                scores = []
                for digest, reader, read in zip(digests, readers, reads, strict=True):
                    digest.update(b"".join(read))
                    scores.append(reader.take(len(read)))
                lines = _interleaved(reads)
                merged = {key: _interleaved([shard[key] for shard in scores]) for key in keys}
                yield ScoreBlock(_LazyRecords(lines, len(lines)), lines, merged)
            sha256s = [digest.hexdigest() for digest in digests]
        for reader in readers:
            reader.check_end()
    for uri, sha256, reader in zip(uris, sha256s, readers, strict=True):
        if sha256 != reader.records_sha256:
            raise RuntimeError(
                f"{uri}: not the records file its score columns ({reader.uri}) were written with; "
                "shard records do not cover the items exactly once"
            )


def _copied(uri: str, items: int, reader: ScoreColumnsReader) -> Generator[ScoreBlock, None, str]:
    """A single shard's merge: its records file in blocks of whole lines (each one piece of bytes, copied to
    samples.jsonl as it is), with their score columns; returns the file's sha256. Raises as
    ``_shard_reads`` does when the file has too few or too many lines."""
    seen = 0
    with storage.open_binary(uri) as handle:
        lines = HashedLines(handle, uri)
        for first, raw in lines.blocks(COPY_BLOCK_BYTES):
            count = lines.block_lines(first, raw)
            if seen + count > items:
                raise RuntimeError(
                    f"{uri}: records beyond the task's items; shard records do not cover the items exactly once"
                )
            seen += count
            yield ScoreBlock(_LazyRecords([raw], count), [raw], reader.take(count))
        if seen < items:
            raise RuntimeError(
                f"{uri}: no record where item {seen} belongs; shard records do not cover the items exactly once"
            )
        return lines.sha256()


class _LazyRecords(Sequence[dict[str, Any]]):
    """The ``count`` records of a block's lines, given as pieces of whole lines (a piece a line, or one for
    the block), each record parsed only when asked for."""

    def __init__(self, pieces: list[bytes], count: int) -> None:
        self._pieces = pieces
        self._count = count
        self._lines: list[bytes] | None = pieces if len(pieces) == count else None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, at: int) -> dict[str, Any]:  # type: ignore[override]
        if self._lines is None:
            # Split at newlines only (bytes.splitlines also splits at a carriage return).
            self._lines = [line + b"\n" for line in b"".join(self._pieces).split(b"\n")[: self._count]]
        return _parsed(self._lines[at])[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self.__getitem__, range(self._count))

    def may_have(self, key: str) -> bool:
        """False when no record of the block has ``key`` (at any depth), told from the lines' bytes: a
        key is encoded as ``"key":``, which no string value's encoding holds (its quotes are escaped)."""
        return json.dumps(key).encode("utf-8") + b":" in b"".join(self._pieces)


def _no_extra_records(uris: list[str], shards: list[Iterator[bytes]]) -> None:
    extra = next((uri for uri, lines in zip(uris, shards, strict=True) if next(lines, None) is not None), None)
    if extra is not None:
        raise RuntimeError(
            f"{extra}: records beyond the task's items; shard records do not cover the items exactly once"
        )


def _joined_ids(records: list[dict[str, Any]]) -> bytes:
    """The records' ids, each followed by a newline, as the shard's manifest hashed them."""
    ids = list(map(_ID, records))
    try:
        text = "\n".join(ids)  # ids are strings but for odd records: str() each only then
    except TypeError:
        text = "\n".join(map(str, ids))
    return (text + "\n").encode("utf-8")


def _interleaved(per_shard: list[list[Any]]) -> list[Any]:
    """One block's values in item order from each shard's: whole rounds, then the last, partial one."""
    rounds = list(chain.from_iterable(zip(*per_shard, strict=False)))
    return rounds + [values[-1] for values in per_shard if len(values) > len(per_shard[-1])]


def _parsed_block(lines: list[bytes]) -> MergedBlock:
    """``_parsed`` over a block of lines: the records, and each one's line when it is copied as it is (else
    None). orjson parses the whole block in one call unless it refuses a line, and then the block goes line
    by line."""
    if _fast_loads is None:
        return _line_by_line(lines)
    try:
        records = list(map(_fast_loads, lines))
    except ValueError:  # a line orjson refuses: each line as _parsed reads it
        return _line_by_line(lines)
    copied: list[bytes | None] = list(lines)
    if not all(map(CALL_DETAIL_KEYS.isdisjoint, records)):
        copied = [
            line if CALL_DETAIL_KEYS.isdisjoint(record) else None for record, line in zip(records, lines, strict=True)
        ]
    if lines and not lines[-1].endswith(b"\n"):  # only a file's last line can lack one
        copied[-1] = None
    return records, copied


def _line_by_line(lines: list[bytes]) -> MergedBlock:
    parsed = list(map(_parsed, lines))
    return [record for record, _ in parsed], [line if ok else None for line, (_, ok) in zip(lines, parsed, strict=True)]


def _parsed(line: bytes) -> tuple[dict[str, Any], bool]:
    """A records line parsed, and whether it can be copied to samples.jsonl as it is (it is the record's
    ``streamed_line``). orjson reads it several times faster than json; what orjson refuses (integers
    beyond 64 bits) json reads, and the record is then encoded again."""
    if _fast_loads is None or not line.endswith(b"\n"):
        return json.loads(line), False
    try:
        record = _fast_loads(line)
    except ValueError:  # what orjson refuses: json reads it, and the record is encoded again
        return json.loads(line), False
    return record, CALL_DETAIL_KEYS.isdisjoint(record)


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    return filter(bytes.strip, handle)  # blank lines skipped, without a Python step per line


@dataclass
class Report:
    candidate: EvaluationResult
    base: EvaluationResult | None = None
    comparison: dict[str, Any] | None = None
    digest: SampleDigest | None = None  # the candidate's samples, digested for report.html as they were written

    def summary(self) -> dict[str, Any]:
        """Flat figures for a pipeline property file (read with Std:JsonGet) and MLflow."""
        out: dict[str, Any] = {"metrics": self.candidate.metrics, "num_samples": self.candidate.num_samples}
        if self.base is not None:
            out["base_metrics"] = self.base.metrics
        if self.comparison is not None:
            # Per metric, so a quality gate reads e.g. improvement.accuracy with JsonGet.
            out["improvement"] = self.comparison.get("improvements", {})
            out["significant_regression"] = bool(self.comparison.get("significant_regression", False))
        return out


def _result(spec: EvaluationSpec, role: str, agg: Aggregate, n: int, dataset_sha256: str) -> EvaluationResult:
    return EvaluationResult(
        eval_type=spec.eval_type,
        name=spec.name,
        model=model_reference(spec, role),
        role=role,
        num_samples=n,
        metrics=agg.metrics,
        dataset_sha256=dataset_sha256,
        stderr=agg.stderr,
        confidence_intervals=agg.confidence_intervals,
        subtasks=agg.subtasks,
        details=agg.details,
    )


def _ordered(task: EvalTask, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in item order, whatever the shard interleaving, so merged output is byte-identical."""
    order = {item.id: i for i, item in enumerate(task.items())}
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids) or set(ids) != set(order):
        raise RuntimeError(
            f"shard records do not cover the items exactly once ({len(ids)} records, {len(order)} items)"
        )
    return sorted(records, key=lambda r: order[r["id"]])


@dataclass
class _Role:
    result: EvaluationResult
    agg: Aggregate
    task: EvalTask
    samples: Path  # the finished samples.jsonl, in a local scratch folder
    records: list[dict[str, Any]] | None  # held only for tasks that aggregate lists


def _finish_role(
    spec: EvaluationSpec,
    role: str,
    records_uri: str,
    task: EvalTask | None,
    scratch: str,
    observe: Callable[[int, Sequence[dict[str, Any]], Any], None],
) -> _Role:
    """``observe`` sees each block of records written to samples.jsonl, with the first one's line number
    (and the score columns, when the shards have them: ``SamplesFile``)."""
    task = task or build_task(spec, role)
    path = Path(scratch, role, "samples.jsonl")
    records: list[dict[str, Any]] | None = None
    with SamplesFile(path, streamed=isinstance(task, StreamingTask), observe=observe) as samples:
        if isinstance(task, StreamingTask):
            scored = verified_scores(records_uri, role) if task.folds_scores else None
            if scored is not None:
                manifest, blocks, states = scored
                agg = task.aggregate_scores(blocks, samples.write_block, states)
            else:
                manifest, merged = verified_records(records_uri, role)
                agg = task.aggregate_stream(merged, samples.write_block, count=manifest.items)
            dataset_sha256 = manifest.dataset_sha256
        else:
            records = _ordered(task, read_records(records_uri, role))
            agg = task.aggregate(records)
            dataset_sha256 = task.dataset_sha256()
            for record in records:
                extra = agg.sample_scores.get(record["id"])
                if extra:
                    record["scores"] = {**record.get("scores", {}), **extra}
            samples.write_block(records, [None] * len(records))  # held already: one block
    add_serving(agg.details, records_prefix(records_uri, role))  # when the job served the model itself
    if role in spec.model_resolution:  # how the caller's model argument became this reference
        agg.details["model_resolution"] = spec.model_resolution[role]
    primary = primary_metric(spec, agg)
    agg.metrics = headline(agg.metrics, primary)
    if primary is not None:
        agg.details["primary_metric"] = primary.name
    return _Role(_result(spec, role, agg, samples.count, dataset_sha256), agg, task, path, records)


def _comparison(spec: EvaluationSpec, candidate: _Role, base: _Role) -> dict[str, Any]:
    from evalstack.results.compare import compare, compare_pairs, joined_pairs

    task_compare = getattr(candidate.task, "compare", None)
    if task_compare is not None:
        return task_compare(candidate.records, base.records)
    seed = int(spec.hyperparameters.get("seed", 1234))
    if candidate.records is not None and base.records is not None:
        return compare(candidate.records, base.records, candidate.agg, base.agg, seed)
    with candidate.samples.open(encoding="utf-8") as cand, base.samples.open(encoding="utf-8") as other:
        return compare_pairs(joined_pairs(cand, other), candidate.agg, base.agg, seed)


def report(
    spec: EvaluationSpec, output_uri: str, *, records_uri: str | None = None, tasks: dict[str, EvalTask] | None = None
) -> Report:
    """Merge shards, aggregate, write results (and the comparison when the base ran).

    Records are read from ``records_uri`` (default: the output itself, where pipeline steps put them).
    Every file is complete (samples.jsonl in a local scratch file) before the first one is written,
    so a failing scorer, judge or comparison leaves no results behind; results.json goes last, as
    the mark of a complete role.

    The candidate's samples are digested for report.html as they are written (``Report.digest``). The
    base is merged first, so its per-sample scores are known when the candidate's samples flow.
    """
    records_uri = records_uri or output_uri
    tasks = tasks or {}
    with tempfile.TemporaryDirectory(prefix="evalstack-report-") as scratch, _young_collections(GC_YOUNG_OBJECTS):
        base: _Role | None = None
        base_scores: BaseScores | None = None
        if spec.evaluate_base_model:
            base_scores = BaseScores()
            base = _finish_role(spec, "base", records_uri, tasks.get("base"), scratch, base_scores.add_block)
        digester = SampleDigester(shard_timings(records_uri, "candidate", LISTED), base_scores)
        candidate = _finish_role(spec, "candidate", records_uri, tasks.get("candidate"), scratch, digester.add_block)
        out = Report(candidate.result)
        out.digest = digester.result(listed_metric(candidate.result.to_dict()))
        uploads = {storage.join(role_uri(output_uri, "candidate"), "samples.jsonl"): candidate.samples}
        files: dict[str, str] = role_files(role_uri(output_uri, "candidate"), candidate.result)
        if base is not None:
            out.base = base.result
            uploads[storage.join(role_uri(output_uri, "base"), "samples.jsonl")] = base.samples
            files.update(role_files(role_uri(output_uri, "base"), base.result))
            out.comparison = with_headline(_comparison(spec, candidate, base), primary_metric(spec, candidate.agg))
            files[storage.join(output_uri, "comparison.json")] = dumps(out.comparison)
        files[storage.join(output_uri, "report.md")] = render_report(candidate.result, out.comparison)
        for uri, path in uploads.items():
            storage.upload_file(path, uri, kms_key_id=spec.kms_key_id)
    for uri in sorted(files, key=lambda u: u.endswith("/results.json")):
        storage.write_text(uri, files[uri], kms_key_id=spec.kms_key_id)
    for role in ("candidate", "base") if out.base is not None else ("candidate",):
        merge_sample_timings(records_uri, role, role_uri(output_uri, role), spec.kms_key_id)  # beside samples.jsonl
    return out


@contextlib.contextmanager
def _young_collections(threshold: int) -> Iterator[None]:
    """The cyclic collector's youngest generation collected every ``threshold`` allocations, not 700: the
    merge holds a chunk of records (acyclic JSON, several objects each) that the default threshold
    collected and promoted again and again, 10 to 15% of the Report step's time. Cycles that job code
    makes are still collected, a bounded number of objects later."""
    first, *older = gc.get_threshold()
    gc.set_threshold(max(first, threshold), *older)
    try:
        yield
    finally:
        gc.set_threshold(first, *older)


def evaluate_in_process(spec: EvaluationSpec, output_uri: str) -> Report:
    """One shard per role, then the report: what a one-instance pipeline does, in this process.

    Every item is read (and so validated) before anything is written, shard records stay in a
    temporary folder, and the report writes only once everything is computed, so a failure leaves
    no output behind.
    """
    roles = ["candidate", "base"] if spec.evaluate_base_model else ["candidate"]
    tasks = {role: build_task(spec, role) for role in roles}
    for task in tasks.values():
        _items(task)
    with tempfile.TemporaryDirectory(prefix="evalstack-records-") as scratch:
        for role, task in tasks.items():
            run_shard(spec, role, 0, 1, scratch, task=task)
        result = report(spec, output_uri, records_uri=scratch, tasks=tasks)
    storage.write_text(storage.join(output_uri, "spec.json"), spec.to_json(), kms_key_id=spec.kms_key_id)
    return result
