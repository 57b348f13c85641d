"""JSON Lines and CSV rows, read one physical line at a time from a binary stream.

Reading bytes line by line (rather than through one TextIOWrapper) keeps memory flat for any file
size, lets a bad UTF-8 byte be reported with its line, and lets the same loop feed sha256 with
exactly the raw bytes of the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import IO, Any

from evalstack.data.records import dataset_error, json_type

try:  # several times faster than json on records; optional, so json stays the reference behaviour
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the installed extras
    _fast_loads = json.loads

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_CHUNK = 1 << 20
# A block of JSON Lines parsed at once (``HashedLines.blocks``): what a reader holds, with its rows and
# records (a few times the block); larger blocks measured no faster.
BLOCK_BYTES = 1 << 18
# One record may carry a long context, but a line this long is a wrong format (a JSON array on one
# line, a file without newlines); stopping here keeps memory bounded for any input.
MAX_LINE_BYTES = 64 * 1024**2
# csv caps a field at 128 KiB by default; long contexts are legitimate. The cap is process-wide
# (the csv module offers nothing per reader), so it is only ever raised, to this bound.
_CSV_FIELD_LIMIT = MAX_LINE_BYTES


def too_many_digits() -> str:
    return f"a number has more than {sys.get_int_max_str_digits()} digits"


class HashedLines:
    """Physical lines of a UTF-8 file, decoded one by one, hashing every raw byte on the way; or the same
    bytes in blocks cut after a newline (``blocks``), for readers that parse many lines in one call."""

    def __init__(self, handle: IO[bytes], uri: str):
        self._handle = handle
        self._uri = uri
        self._digest = hashlib.sha256()
        self.consumed = 0  # bytes read so far, for progress estimates
        self.newlines = 0  # in the blocks ``blocks`` has given so far, the one given last included

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return self.decoded(iter(partial(self._handle.readline, MAX_LINE_BYTES + 1), b""), 1, hashed=True)

    def decoded(self, raw_lines: Iterable[bytes], number: int, *, hashed: bool = False) -> Iterator[tuple[int, str]]:
        """``raw_lines`` (each with its newline) numbered from ``number`` and decoded; ``hashed``: they are
        read here, so they are hashed and counted here too (a block's lines were, when it was read)."""
        for raw in raw_lines:
            if hashed:
                self.consumed += len(raw)
                self._digest.update(raw)
            if len(raw) > MAX_LINE_BYTES:
                raise dataset_error(self._uri, f"line {number}", f"longer than {MAX_LINE_BYTES:,} bytes")
            if number == 1:
                if raw.startswith(UTF16_BOMS):
                    raise dataset_error(self._uri, "line 1", "file is UTF-16 (byte order mark); save it as UTF-8")
                raw = raw.removeprefix(UTF8_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problem = f"not valid UTF-8 (byte 0x{raw[err.start]:02x} is byte {err.start + 1} of the line)"
                raise dataset_error(self._uri, f"line {number}", problem) from None
            yield number, text
            number += 1

    def blocks(self, size: int | None = None) -> Iterator[tuple[int, bytes]]:
        """The rest of the file in blocks of about ``size`` bytes (default ``BLOCK_BYTES``) that end after a
        newline (or at the end of the file), each with the number of its first line; hashed and counted as
        they are read. A block ends after at most ``MAX_LINE_BYTES + 1`` bytes of its last line, so a longer
        line is cut where ``decoded`` reports it."""
        while block := self._handle.read(size or BLOCK_BYTES):
            if not block.endswith(b"\n"):
                block += self._handle.readline(MAX_LINE_BYTES + 1)
            self.consumed += len(block)
            self._digest.update(block)
            number = self.newlines + 1
            self.newlines += block.count(b"\n")
            yield number, block

    def block_lines(self, first: int, block: bytes) -> int:
        """The lines of ``block``, the block ``blocks`` gave last (its first line is line ``first``): from the
        newlines ``blocks`` counted, and a last line without one."""
        return self.newlines + 1 - first + (not block.endswith(b"\n"))

    def sha256(self) -> str:
        """The sha256 of the whole file: reads (without parsing) whatever the caller did not consume."""
        for chunk in iter(partial(self._handle.read, _CHUNK), b""):
            self._digest.update(chunk)
        return self._digest.hexdigest()


class JsonlRows:
    """One JSON object per line; blank lines are skipped but still counted."""

    columns: list[str] | None = None  # no schema: each row carries its own keys
    where_columns = ""

    def __init__(self, lines: HashedLines, uri: str):
        self.lines = lines
        self._uri = uri
        self.sha256 = lines.sha256
        self._first = True  # no row read yet: a bad first line may be a JSON array

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return self._parsed(self.lines)

    def blocks(self) -> Iterator[tuple[Sequence[int], list[dict[str, Any]]]]:
        """The rows in blocks, with their line numbers: a block of plain lines (every line one JSON object
        that orjson reads from its bytes) is parsed by mapping orjson over its lines, with no Python code
        per line; any other block goes line by line through ``__iter__``'s path, which names the line at
        fault and lets json read what orjson refuses."""
        for number, block in self.lines.blocks():
            yield self.parse_block(number, block)

    def parse_block(
        self, number: int, block: bytes, *, first: bool | None = None
    ) -> tuple[Sequence[int], list[dict[str, Any]]]:
        """The rows of ``block`` (whose first line is line ``number``) and their line numbers. ``first``:
        whether no row comes before the block (default: none came before in this reader's pass)."""
        if first is not None:
            self._first = first
        raw = block.split(b"\n")
        if not raw[-1]:
            raw.pop()  # what follows the block's last newline
        rows = self._plain(number, raw) if len(block) <= MAX_LINE_BYTES else None
        if rows is not None:
            self._first = self._first and not rows
            return range(number, number + len(rows)), rows
        parsed = list(self._parsed(self.lines.decoded(io.BytesIO(block), number)))
        return [n for n, _ in parsed], [row for _, row in parsed]

    def _plain(self, number: int, raw: list[bytes]) -> list[dict[str, Any]] | None:
        """Each line's object when every line is one, as ``__iter__`` reads it; None otherwise. orjson reads
        the bytes (rejecting invalid UTF-8, as decoding does); a blank line, NaN, a lone surrogate escape
        or a line that is not an object makes the block go line by line."""
        if _fast_loads is json.loads or not raw:
            return None
        if number == 1:
            if raw[0].startswith(UTF16_BOMS):
                return None
            raw[0] = raw[0].removeprefix(UTF8_BOM)
        try:
            rows = list(map(_fast_loads, raw))
        except ValueError:
            return None
        return rows if set(map(type, rows)) == {dict} else None

    def _parsed(self, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, text in lines:
            if not text.strip():
                continue
            try:
                value = parse_json(text.rstrip("\r\n"))  # so error columns count within this line
            except json.JSONDecodeError as err:
                raise self._error(number, f"invalid JSON: {err.msg} (column {err.colno})", self._first, text) from None
            except RecursionError:
                raise self._error(number, "invalid JSON: nested too deeply to read", False, text) from None
            except ValueError:  # the only other ValueError json raises: Python's integer-size limit
                raise self._error(number, f"invalid JSON: {too_many_digits()}", False, text) from None
            if type(value) is not dict:
                raise self._error(number, f"expected a JSON object, got {json_type(value)}", self._first, text)
            self._first = False
            yield number, value

    def _error(self, number: int, problem: str, first: bool, text: str) -> Exception:
        # A pretty-printed JSON array is the most common wrong shape; say so instead of "bad JSON".
        looks_like_array = first and text.lstrip().startswith("[")
        hint = " (JSON Lines needs one object per line; this looks like a JSON array)" if looks_like_array else ""
        return dataset_error(self._uri, f"line {number}", problem + hint)


def parse_json(text: str) -> Any:
    """One JSON document (a line of JSONL): orjson when it accepts it; otherwise json decides, so values
    and error messages are json's: orjson refuses what json reads (NaN, integers beyond 64 bits, lone
    surrogate escapes)."""
    try:
        return _fast_loads(text)
    except ValueError:
        return json.loads(text)


class CsvRows:
    """RFC 4180 CSV with a header row; a record's line is the physical line where it starts."""

    def __init__(self, lines: HashedLines, uri: str):
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        self.lines = lines
        self._uri = uri
        self.sha256 = lines.sha256
        # Each item fed to csv.reader is one physical line, so reader.line_num is a physical line number.
        self._reader = csv.reader((text for _, text in lines), strict=True)
        header = self._next_row()
        if header is None:
            raise dataset_error(uri, "line 1", "no header row")
        self.header_line, self.columns = header
        seen: set[str] = set()
        for name in self.columns:
            if name in seen:
                raise dataset_error(uri, f"line {self.header_line}", f"field {name!r}: duplicate column in header")
            seen.add(name)
        self.where_columns = f"line {self.header_line}"

    def _next_row(self) -> tuple[int, list[str]] | None:
        """The next non-blank row and the line it starts on, or None at the end."""
        while True:
            start = self._reader.line_num + 1
            try:
                row = next(self._reader, None)
            except csv.Error as err:
                raise dataset_error(self._uri, f"line {start}", f"malformed CSV: {err}") from None
            if row is None:
                return None
            if row:  # csv yields [] for an empty line
                return start, row

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        width = len(self.columns)
        while (item := self._next_row()) is not None:
            line, row = item
            if len(row) < width:
                raise dataset_error(
                    self._uri,
                    f"line {line}",
                    f"field {self.columns[len(row)]!r}: missing (row has {len(row)} of the header's {width} fields)",
                )
            if len(row) > width:
                raise dataset_error(
                    self._uri,
                    f"line {line}",
                    f"field {width + 1}: unexpected (row has {len(row)} fields, the header {width}: "
                    f"nothing may follow {self.columns[-1]!r})",
                )
            yield line, dict(zip(self.columns, row, strict=True))
