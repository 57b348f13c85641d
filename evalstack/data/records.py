"""One evaluation record, and how a raw row (JSON object, CSV row, Parquet row) becomes one.

Rows come from three formats with different notions of "missing": JSON and Parquet have null,
CSV only has the empty cell. The builder folds all three into one :class:`Record` and names the
file, line and column in every error so users can fix their data without guessing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

from evalstack.spec import ColumnMapping

# When the mapped reference column is absent, these common names for the expected answer are used.
REFERENCE_ALIASES = ("ground_truth", "label")
_DEFAULT_COLUMNS = ColumnMapping()
_TEXT_ROLES = ("prompt", "response", "context")
_SURROGATE = re.compile("[\ud800-\udfff]")


class DatasetError(ValueError):
    """Bad dataset content; the message names the file URI, the line (or row) and the field."""


def dataset_error(uri: str, where: str | None, problem: str) -> DatasetError:
    """``<uri>: <where>: <problem>``, e.g. ``s3://b/k.jsonl: line 7: field 'prompt': missing``."""
    return DatasetError(f"{uri}: {where}: {problem}" if where else f"{uri}: {problem}")


@dataclass
class Record:
    """One sample. ``line`` is the 1-based physical line where it starts (JSONL, CSV: the header is
    line 1) or the 1-based row number (Parquet). ``metadata`` holds every unmapped field as read.
    Not frozen: a reader makes one per row, and a frozen dataclass costs about four times more to build."""

    line: int
    prompt: str | None
    response: str | None
    reference: str | list[str] | None
    context: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordBlock:
    """Consecutive records, column by column: what a reader yields, so a chunk of records is handled by
    calls per column rather than per record. Row ``i`` is the record ``records()`` yields ``i``-th."""

    lines: Sequence[int]
    prompts: list[str | None]
    responses: list[str | None]
    references: list[str | list[str] | None]
    contexts: list[str | None]
    metadata: list[dict[str, Any]] | None  # None: every record's is empty (the common case, not built)

    def __len__(self) -> int:
        return len(self.lines)

    def metadata_dicts(self) -> list[dict[str, Any]]:
        """Each record's metadata, a dict of its own."""
        return self.metadata if self.metadata is not None else [{} for _ in self.lines]

    def records(self) -> Iterator[Record]:
        columns = (self.lines, self.prompts, self.responses, self.references, self.contexts)
        return map(Record, *columns, self.metadata_dicts())

    def part(self, start: int, stop: int | None = None, step: int = 1) -> RecordBlock:
        """Rows ``start:stop:step``."""
        cut = slice(start, stop, step)
        return RecordBlock(
            self.lines[cut], self.prompts[cut], self.responses[cut], self.references[cut], self.contexts[cut],
            None if self.metadata is None else self.metadata[cut],
        )  # fmt: skip

    @classmethod
    def of(cls, records: Sequence[Record]) -> RecordBlock:
        columns = (list(map(attrgetter(name), records)) for name in _RECORD_FIELDS)
        return cls(*columns)


_RECORD_FIELDS = ("line", "prompt", "response", "reference", "context", "metadata")
# Types a metadata value of a plain block may have (anything nested goes row by row, checked in depth).
_FLAT = frozenset({str, int, float, bool, type(None)})


def field_label(column: str, role: str) -> str:
    """``field 'prompt'``, or ``field 'Question' (prompt)`` when the user mapped the role to a column."""
    return f"field {column!r}" if column == role else f"field {column!r} ({role})"


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages (Python names for non-JSON types)."""
    names = {dict: "object", list: "array", tuple: "array", type(None): "null", str: "string", bool: "boolean"}
    names |= {int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


class RecordBuilder:
    """Turns raw rows into records for one file and one column mapping.

    ``unit`` is how positions are named in messages ("line" for text files, "row" for Parquet).
    ``empty_is_missing`` is set for CSV, where an empty cell is the only way to write "no value".
    """

    def __init__(self, mapping: ColumnMapping, uri: str, *, unit: str = "line", empty_is_missing: bool = False):
        self.mapping = mapping
        self.uri = uri
        self.unit = unit
        self.empty_is_missing = empty_is_missing
        self._text_columns = frozenset(getattr(mapping, role) for role in _TEXT_ROLES)

    def check_columns(self, columns: Sequence[str], where: str) -> None:
        """Header/schema check for formats that declare their columns up front (CSV, Parquet).

        A column the user mapped explicitly must exist; default names may be absent (they are optional
        roles), but the file needs a prompt or a response column to be evaluable at all.
        """
        present = set(columns)
        shown = ", ".join(repr(c) for c in columns)
        for role in (*_TEXT_ROLES, "reference"):
            column = getattr(self.mapping, role)
            if column == getattr(_DEFAULT_COLUMNS, role) or column in present:
                continue
            if role == "reference" and any(alias in present for alias in REFERENCE_ALIASES):
                continue
            raise dataset_error(self.uri, where, f"{field_label(column, role)}: column missing (columns: {shown})")
        if self.mapping.prompt not in present and self.mapping.response not in present:
            raise dataset_error(
                self.uri,
                where,
                f"{field_label(self.mapping.prompt, 'prompt')}: column missing; a dataset needs a "
                f"{self.mapping.prompt!r} or a {self.mapping.response!r} column (columns: {shown})",
            )

    def build(self, line: int, row: dict[str, Any]) -> Record:
        for column, value in row.items():
            if not (type(value) is str and value.isascii()):  # the common case, checked inline: it is hot
                self._check_unicode(line, str(column), value)
        m = self.mapping
        prompt = self._text(row.get(m.prompt), m.prompt, "prompt", line)
        response = self._text(row.get(m.response), m.response, "response", line)
        context = self._text(row.get(m.context), m.context, "context", line)
        ref_column = m.reference if m.reference in row else self._reference_column(row)
        reference = row.get(ref_column)
        if type(reference) is not str or self.empty_is_missing:
            reference = self._reference(reference, ref_column, line)
        if prompt is None and response is None:
            problem = f"missing; a record needs a prompt (or a {m.response!r} to score)"
            raise self._error(line, f"{field_label(m.prompt, 'prompt')}: {problem}")
        if prompt is not None and not prompt.strip():
            raise self._error(line, f"{field_label(m.prompt, 'prompt')}: empty")
        return Record(
            line=line,
            prompt=prompt,
            response=response,
            reference=reference,
            context=context,
            metadata={k: v for k, v in row.items() if k not in self._text_columns and k != ref_column},
        )

    def build_block(self, lines: Sequence[int], rows: list[dict[str, Any]]) -> RecordBlock:
        """The records of ``rows`` (row ``i`` read from line ``lines[i]``), exactly as ``build`` makes them
        (errors too): a plain block is checked and cut into columns a column at a time, any other one
        goes row by row."""
        block = None if self.empty_is_missing or not rows else self._plain_block(lines, rows)
        return block if block is not None else RecordBlock.of(list(map(self.build, lines, rows)))

    def _plain_block(self, lines: Sequence[int], rows: list[dict[str, Any]]) -> RecordBlock | None:
        """The block's records when ``build`` would accept every row without changing a value: every row
        has the same keys in the same order, a prompt that is a non-blank string, strings (or no such key)
        for the other roles, flat metadata values, and no lone surrogate; else None."""
        keys = tuple(rows[0])
        if len(set(map(len, rows))) != 1:
            return None
        m = self.mapping
        present = set(keys)
        ref_column = m.reference if m.reference in present else self._reference_column(rows[0])
        meta_keys = [k for k in keys if k not in self._text_columns and k != ref_column]
        # Metadata keeps each row's key order, so then the keys must come in one order; without metadata,
        # rows of one length that all have the first row's roles (no KeyError below) have its keys.
        if meta_keys and len(rows) > 1 and set(map(tuple, rows)) != {keys}:
            return None
        columns: dict[str, list[Any]] = {}
        try:
            for column in (m.prompt, m.response, m.context, ref_column):
                if column in present and column not in columns:
                    values = columns[column] = list(map(itemgetter(column), rows))
                    if set(map(type, values)) != {str} or not self._valid_text(values):
                        return None
        except KeyError:
            return None
        if m.prompt not in columns or not all(map(str.strip, columns[m.prompt])):
            return None
        for key in meta_keys:
            values = list(map(itemgetter(key), rows))
            if not set(map(type, values)) <= _FLAT or not self._valid_text([v for v in values if type(v) is str]):
                return None
        return RecordBlock(
            lines=lines,
            prompts=columns[m.prompt],
            responses=columns.get(m.response) or [None] * len(rows),
            references=columns.get(ref_column) or [None] * len(rows),
            contexts=columns.get(m.context) or [None] * len(rows),
            metadata=[{key: row[key] for key in meta_keys} for row in rows] if meta_keys else None,
        )

    @staticmethod
    def _valid_text(values: list[str]) -> bool:
        """No lone surrogate in any of ``values`` (``build`` would reject its row)."""
        return all(map(str.isascii, values)) or not any(map(_SURROGATE.search, values))

    def _check_unicode(self, line: int, column: str, value: Any) -> None:
        """Reject lone surrogates (JSON ``"\\ud800"`` escapes): no encoder can send or write them."""
        if isinstance(value, str):
            # isascii() is O(1) on CPython's str and rules out a surrogate for most text without a scan.
            surrogate = None if value.isascii() else _SURROGATE.search(value)
            if surrogate is not None:
                problem = f"lone surrogate U+{ord(surrogate[0]):04X} at character {surrogate.start() + 1}"
                raise self._error(line, f"field {column!r}: {problem}; text must be valid Unicode")
        elif isinstance(value, dict):
            for key, item in value.items():
                self._check_unicode(line, f"{column}.{key}", item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                self._check_unicode(line, f"{column}[{i}]", item)

    def _error(self, line: int, problem: str) -> DatasetError:
        return dataset_error(self.uri, f"{self.unit} {line}", problem)

    def _reference_column(self, row: dict[str, Any]) -> str:
        if self.mapping.reference in row:
            return self.mapping.reference
        return next((alias for alias in REFERENCE_ALIASES if alias in row), self.mapping.reference)

    def _text(self, value: Any, column: str, role: str, line: int) -> str | None:
        """``_coerce`` with the common case, a string in a format without empty-means-missing, inline."""
        if type(value) is str and not self.empty_is_missing:
            return value
        return self._coerce(value, column, role, line)

    def _coerce(self, value: Any, column: str, role: str, line: int) -> str | None:
        """Strings pass; numbers and booleans become text because labels are often ints."""
        if value is None:
            return None
        if isinstance(value, str):
            return None if self.empty_is_missing and value == "" else value
        if isinstance(value, bool):  # before int: bool is an int subclass. JSON spelling.
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return None if math.isnan(value) else str(value)  # NaN is how pandas writes "missing"
        raise self._error(line, f"{field_label(column, role)}: expected a string, got {json_type(value)}")

    def _reference(self, value: Any, column: str, line: int) -> str | list[str] | None:
        if not isinstance(value, list | tuple):
            return self._coerce(value, column, "reference", line)
        if not value:
            raise self._error(line, f"{field_label(column, 'reference')}: empty list")
        out: list[str] = []
        for i, item in enumerate(value):
            text = self._coerce(item, f"{column}[{i}]", "reference", line)
            if text is None:
                raise self._error(line, f"{field_label(f'{column}[{i}]', 'reference')}: null")
            out.append(text)
        return out
