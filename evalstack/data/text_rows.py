"""JSON Lines and CSV rows, read one physical line at a time from a binary stream.

Reading bytes line by line (rather than through one TextIOWrapper) keeps memory flat for any file
size, lets a bad UTF-8 byte be reported with its line, and lets the same loop feed sha256 with
exactly the raw bytes of the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from functools import partial
from typing import IO, Any

from evalstack.data.records import dataset_error, json_type

try:  # several times faster than json on records; optional, so json stays the reference behaviour
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the installed extras
    _fast_loads = json.loads

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_CHUNK = 1 << 20
# One record may carry a long context, but a line this long is a wrong format (a JSON array on one
# line, a file without newlines); stopping here keeps memory bounded for any input.
MAX_LINE_BYTES = 64 * 1024**2
# csv caps a field at 128 KiB by default; long contexts are legitimate. The cap is process-wide
# (the csv module offers nothing per reader), so it is only ever raised, to this bound.
_CSV_FIELD_LIMIT = MAX_LINE_BYTES


def too_many_digits() -> str:
    return f"a number has more than {sys.get_int_max_str_digits()} digits"


class HashedLines:
    """Physical lines of a UTF-8 file, decoded one by one, hashing every raw byte on the way."""

    def __init__(self, handle: IO[bytes], uri: str):
        self._handle = handle
        self._uri = uri
        self._digest = hashlib.sha256()
        self.consumed = 0  # bytes read so far, for progress estimates

    def __iter__(self) -> Iterator[tuple[int, str]]:
        number = 0
        while raw := self._handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            self.consumed += len(raw)
            self._digest.update(raw)
            if len(raw) > MAX_LINE_BYTES:
                raise dataset_error(self._uri, f"line {number}", f"longer than {MAX_LINE_BYTES:,} bytes")
            if number == 1:
                if raw.startswith(_UTF16_BOMS):
                    raise dataset_error(self._uri, "line 1", "file is UTF-16 (byte order mark); save it as UTF-8")
                raw = raw.removeprefix(_UTF8_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problem = f"not valid UTF-8 (byte 0x{raw[err.start]:02x} is byte {err.start + 1} of the line)"
                raise dataset_error(self._uri, f"line {number}", problem) from None
            yield number, text

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

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        first = True
        for number, text in self.lines:
            if not text.strip():
                continue
            try:
                value = parse_json(text.rstrip("\r\n"))  # so error columns count within this line
            except json.JSONDecodeError as err:
                raise self._error(number, f"invalid JSON: {err.msg} (column {err.colno})", first, text) from None
            except RecursionError:
                raise self._error(number, "invalid JSON: nested too deeply to read", False, text) from None
            except ValueError:  # the only other ValueError json raises: Python's integer-size limit
                raise self._error(number, f"invalid JSON: {too_many_digits()}", False, text) from None
            if type(value) is not dict:
                raise self._error(number, f"expected a JSON object, got {json_type(value)}", first, text)
            first = False
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
