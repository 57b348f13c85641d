"""Stream a user dataset (JSONL, CSV, Parquet; local path, file:// or s3://) as validated records.

Design: one pass does everything. :class:`DatasetReader` yields records while hashing the raw bytes
it reads; when iteration ends it knows the record count, the file's sha256 (results record it as
``dataset_sha256``) and whether every record carries a response. :func:`scan_dataset` is that pass
without keeping records: the engine runs it first so a bad line 9,000,000 fails before any model
is called, then iterates again to evaluate.

Records also come in blocks (``DatasetReader.blocks``, a ``RecordBlock`` of columns): a JSON Lines file is
then parsed and checked a block of lines at a time, with the same records, errors and summary.

With ``limit``, the first ``limit`` records are yielded; parsing goes on only as far as needed to
prove the file has ``MIN_DATASET_SAMPLES`` records, and the rest of the file is read unparsed so
``sha256`` still identifies the whole file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import PurePosixPath
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from evalstack import storage
from evalstack.catalog.limits import MAX_DATASET_BYTES, MIN_DATASET_SAMPLES
from evalstack.data.arrow_tally import ARROW_MIN_BYTES, tallies
from evalstack.data.block_pool import BlockPool, BlockTally
from evalstack.data.parquet_rows import open_parquet
from evalstack.data.records import Record, RecordBlock, RecordBuilder, dataset_error, field_label
from evalstack.data.scan_process import summary_from_child
from evalstack.data.text_rows import CsvRows, HashedLines, JsonlRows
from evalstack.spec import DatasetSpec

FORMATS = ("jsonl", "csv", "parquet")
_FORMAT_NAMES = {"jsonl": "jsonl", "json": "jsonl", "jsonlines": "jsonl", "ndjson": "jsonl", "csv": "csv"}
_FORMAT_NAMES |= {"parquet": "parquet", "pq": "parquet"}
_NOT_FOUND = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
T = TypeVar("T")


class _Rows(Protocol):
    columns: list[str] | None
    where_columns: str

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]: ...

    def sha256(self) -> str: ...


def resolve_format(spec: DatasetSpec) -> str:
    """``spec.format`` when given, else from the file suffix (.jsonl/.json/.ndjson, .csv, .parquet/.pq)."""
    given = spec.format is not None
    name = spec.format if given else PurePosixPath(spec.uri.rsplit("/", 1)[-1]).suffix
    fmt = _FORMAT_NAMES.get((name or "").lower().lstrip("."))
    if fmt is not None:
        return fmt
    if given:
        raise dataset_error(spec.uri, None, f"format {spec.format!r} is not supported; use one of {list(FORMATS)}")
    raise dataset_error(
        spec.uri,
        None,
        f"cannot tell the format from the suffix {name!r}; name the file .jsonl, .csv or .parquet "
        f"or set the dataset format to one of {list(FORMATS)}",
    )


def _checked_size(uri: str) -> int:
    """Size before reading: missing files, empty files and files over the service limit fail here."""
    try:
        if storage.uses_local_files(uri) and storage.local_path(uri).is_dir():
            raise dataset_error(uri, None, "is a directory, not a file")
        size = storage.size(uri)
    except FileNotFoundError:
        raise dataset_error(uri, None, "file not found") from None
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in _NOT_FOUND:
            raise dataset_error(uri, None, "file not found") from None
        raise
    if size == 0:
        raise dataset_error(uri, None, "empty file")
    if size > MAX_DATASET_BYTES:
        raise dataset_error(uri, None, f"{size:,} bytes exceeds the {MAX_DATASET_BYTES:,}-byte (10 GiB) dataset limit")
    return size


@contextlib.contextmanager
def _open_rows(uri: str, fmt: str) -> Iterator[_Rows]:
    if fmt == "parquet":
        with open_parquet(uri) as rows:
            yield rows
        return
    with storage.open_binary(uri) as handle:
        lines = HashedLines(handle, uri)
        yield JsonlRows(lines, uri) if fmt == "jsonl" else CsvRows(lines, uri)


def _file_state(spec: DatasetSpec, limit: int | None) -> tuple[object, ...] | None:
    """What identifies a local file's content for ``_PASSES``: the file (device, inode), its size and its
    modification and change times, with what the pass read it as; None for other stores."""
    if not storage.uses_local_files(spec.uri):
        return None
    try:
        st = storage.local_path(spec.uri).stat()
    except OSError:
        return None
    return (repr(spec), limit, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class DatasetSummary:
    """What one full pass learned. ``count`` is the number of records yielded (after ``limit``)."""

    uri: str
    format: str
    size_bytes: int
    count: int
    sha256: str
    has_responses: bool  # every record has a response: score them, do not call the model
    has_references: bool  # every record has a reference answer


# Summaries of complete passes over unchanged local files in this process: the client reads a dataset
# for several checks before a run, and a later count need not read it all again.
_PASSES: dict[tuple[object, ...], DatasetSummary] = {}


class DatasetReader:
    """Iterate once for records; afterwards ``summary`` (count, sha256, has_responses) is available.

    Iterating again re-reads the file. ``summary`` raises if the last iteration did not finish
    (e.g. the caller stopped early), because a partial hash would not identify the file.
    """

    def __init__(self, spec: DatasetSpec, *, limit: int | None = None):
        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit}")
        self.spec = spec
        self.limit = limit
        self.format = resolve_format(spec)
        self._summary: DatasetSummary | None = None
        self._read: tuple[HashedLines, int] | None = None  # a text pass's lines and the file size

    def known_summary(self) -> DatasetSummary | None:
        """The summary of an earlier complete pass in this process over this local file, unchanged since."""
        state = _file_state(self.spec, self.limit)
        return None if state is None else _PASSES.get(state)

    def fraction_read(self) -> float | None:
        """During a pass over a text file, the part of its bytes read so far; None otherwise."""
        if self._read is None:
            return None
        lines, size = self._read
        return lines.consumed / size

    @property
    def summary(self) -> DatasetSummary:
        if self._summary is None:
            raise RuntimeError(f"{self.spec.uri}: the summary is known only after a complete iteration")
        return self._summary

    def scan(self) -> DatasetSummary:
        """One validating pass that keeps nothing; returns the summary. A JSON Lines file of at least
        ``ARROW_MIN_BYTES`` read without a limit is checked by pyarrow's reader on every core where it can
        be (``arrow_tally``), in a child process (``scan_process``), with the same summary and errors."""
        if self.limit is None and self.format == "jsonl" and _checked_size(self.spec.uri) >= ARROW_MIN_BYTES:
            state = _file_state(self.spec, self.limit)
            fields = summary_from_child(self.spec)
            if fields is not None:
                self._summary = DatasetSummary(**fields)
                _remember(state, self.spec, self.limit, self._summary)
                return self._summary
        return self.scan_here()

    def scan_here(self) -> DatasetSummary:
        """``scan`` in this process."""
        for _ in self.mapped(None):
            pass
        return self.summary

    def __iter__(self) -> Iterator[Record]:
        for block in self.blocks():
            yield from block.records()

    def blocks(self) -> Iterator[RecordBlock]:
        """The records in blocks (see ``RecordBlock``); the same records, errors and summary as iterating.

        Without a limit, a JSON Lines file is read in byte blocks parsed a block at a time (see
        ``JsonlRows.blocks``); other formats, and a limited pass that must stop at an exact row, build
        records row by row and group them."""
        return self.mapped(_same)

    def mapped(self, fn: Callable[[RecordBlock], T] | None, pool: BlockPool | None = None) -> Iterator[T]:
        """``fn`` of each of ``blocks()``, in order; ``fn`` None: a validating pass, which yields nothing.
        With a ``pool`` (and a JSON Lines file big enough for it, read without a limit), the blocks are
        parsed and checked, and ``fn`` is applied, in the pool's processes, while this one reads and hashes
        the file; the results, errors and summary are the same."""
        self._summary = None
        uri = self.spec.uri
        state = _file_state(self.spec, self.limit)
        size = _checked_size(uri)
        unit = "row" if self.format == "parquet" else "line"
        builder = RecordBuilder(self.spec.columns, uri, unit=unit, empty_is_missing=self.format == "csv")
        tally = BlockTally(0, 0, None, None, False)
        with _open_rows(uri, self.format) as rows:
            self._read = (rows.lines, size) if isinstance(rows, JsonlRows | CsvRows) else None
            if rows.columns is not None:
                builder.check_columns(rows.columns, rows.where_columns)
            if self.limit is None and isinstance(rows, JsonlRows):
                if fn is None and size >= ARROW_MIN_BYTES:
                    results = ((tally, None) for tally in tallies(rows, builder))
                elif pool is not None and pool.wanted(size):
                    results = pool.results(rows, builder, fn)
                else:
                    results = _applied((builder.build_block(*parsed) for parsed in rows.blocks()), fn, None)
            else:
                results = _applied(_grouped(rows, builder, self.limit), fn, self.limit)
            for counted, value in results:
                tally = tally.then(counted)
                if counted.yielded and fn is not None:
                    yield value  # type: ignore[misc]
            sha256 = rows.sha256()
        seen, no_prompt, no_response = tally.read, tally.no_prompt, tally.no_response
        if seen < MIN_DATASET_SAMPLES:
            raise dataset_error(uri, None, f"{seen} record(s); a dataset needs at least {MIN_DATASET_SAMPLES}")
        if no_prompt is not None and no_response is not None:
            raise dataset_error(
                uri,
                f"{unit} {no_prompt}",
                f"{field_label(self.spec.columns.prompt, 'prompt')}: missing; every record needs a prompt "
                f"because {unit} {no_response} has no response, so the model will be called",
            )
        self._summary = DatasetSummary(
            uri=uri,
            format=self.format,
            size_bytes=size,
            count=min(seen, self.limit) if self.limit is not None else seen,
            sha256=sha256,
            has_responses=no_response is None,
            has_references=not tally.no_reference,
        )
        _remember(state, self.spec, self.limit, self._summary)


def _remember(state: tuple[object, ...] | None, spec: DatasetSpec, limit: int | None, summary: DatasetSummary) -> None:
    """Keep ``summary`` in ``_PASSES`` when the file (in ``state`` before the pass) is unchanged since."""
    if state is not None and state == _file_state(spec, limit):
        _PASSES[state] = summary


def _same(block: RecordBlock) -> RecordBlock:
    return block


def _applied(
    blocks: Iterable[RecordBlock], fn: Callable[[RecordBlock], T] | None, limit: int | None
) -> Iterator[tuple[BlockTally, T | None]]:
    """Each block's tally and ``fn`` of it; with ``limit``, only its first ``limit`` records are yielded
    (and tallied) while every record read counts towards the dataset's minimum size."""
    seen = 0
    for block in blocks:
        seen += len(block)
        read = len(block)
        if limit is not None and seen > limit:
            block = block.part(0, max(0, len(block) - (seen - limit)))
        yield BlockTally.of(block, read), (fn(block) if fn is not None and len(block) else None)


# Records per block when records are built row by row (CSV, Parquet, a limited pass): small, as a record
# may carry a long context.
ROW_BLOCK = 512


def _grouped(rows: _Rows, builder: RecordBuilder, limit: int | None) -> Iterator[RecordBlock]:
    """Records built row by row, in blocks; with ``limit``, stopping at the row that proves the dataset's
    minimum size (or the limit, if larger), so rows after it are never parsed."""
    stop = None if limit is None else max(limit, MIN_DATASET_SAMPLES)
    built = (builder.build(line, row) for line, row in islice(rows, stop))
    while block := list(islice(built, ROW_BLOCK)):
        yield RecordBlock.of(block)


def iter_records(spec: DatasetSpec, *, limit: int | None = None) -> Iterator[Record]:
    """The records of ``spec``'s dataset, streamed and validated (use DatasetReader to get the summary)."""
    return iter(DatasetReader(spec, limit=limit))


def scan_dataset(spec: DatasetSpec, *, limit: int | None = None) -> DatasetSummary:
    """Validate every record in one streaming pass and summarise (count, sha256, has_responses)."""
    return DatasetReader(spec, limit=limit).scan()
