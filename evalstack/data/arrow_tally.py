"""The validating pass over a big JSON Lines file: pyarrow's JSON reader checks its blocks on every core.

A validating pass (``DatasetReader.scan``) keeps nothing of a block but its tally (``BlockTally``): how
many records, the first line without a prompt or without a response, and whether a record has no
reference. pyarrow parses a block into typed columns in its own threads, without a Python object per
value; when the columns show that ``RecordBuilder.build`` accepts every row (see ``plain_tally``), the
tally is read off them. Any other block goes the row path (orjson and ``RecordBuilder``), which names the
line and field of an error, so a pass's summary and errors are the row path's exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

from evalstack.data.block_pool import BlockTally
from evalstack.data.records import REFERENCE_ALIASES, RecordBuilder
from evalstack.data.text_rows import MAX_LINE_BYTES, UTF8_BOM, UTF16_BOMS, JsonlRows
from evalstack.spec import ColumnMapping

# Below this size a pass stays on the row path: importing pyarrow costs more than it saves.
ARROW_MIN_BYTES = 16 * 1024**2
# A block pyarrow parses at once, in pieces of ARROW_PIECE_BYTES spread over its threads (4 MiB measured
# fastest on 2 cores: 0.67 s for 1.1 M short rows, against 1.16 s in blocks of 1 MiB).
ARROW_BLOCK_BYTES = 4 * 1024**2
ARROW_PIECE_BYTES = 1024**2


def tallies(rows: JsonlRows, builder: RecordBuilder) -> Iterator[BlockTally]:
    """Each block's tally, in file order: read off pyarrow's columns where they show a plain block, else
    from the records the row path builds (raising its error for a bad line)."""
    import pyarrow as pa

    read = 0
    for number, raw in rows.lines.blocks(ARROW_BLOCK_BYTES):
        tally = plain_tally(number, raw, rows.lines.block_lines(number, raw), builder.mapping)
        if tally is None:
            block = builder.build_block(*rows.parse_block(number, raw, first=read == 0))
            tally = BlockTally.of(block, len(block))
        read += tally.read
        yield tally
    # The client lives on through the run: give back what pyarrow's allocator kept of the tables.
    pa.default_memory_pool().release_unused()


def plain_tally(number: int, raw: bytes, lines: int, mapping: ColumnMapping) -> BlockTally | None:
    """The tally of ``raw`` (``lines`` whole lines; the first is line ``number``) when pyarrow's columns
    show that the row path accepts every line; None when they cannot show it, or the block has a bad line.

    What the row path rejects, pyarrow rejects or the checks here catch: invalid UTF-8 (checked here), a
    lone surrogate escape and a key given twice in one object (pyarrow errors); a line that is not exactly
    one object (it does not start with a brace, or there are more rows than lines); a text field that is
    not a string, number or boolean, or is missing or null in some rows (its column has another type or
    nulls); a prompt of whitespace alone; an integer too long for Python to read (pyarrow reads it as an
    infinite double). Nested metadata, NaN in a text field, text pyarrow reads as dates and a BOM go the
    row path, which decides them."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    if len(raw) > MAX_LINE_BYTES or (number == 1 and raw.startswith((UTF8_BOM, *UTF16_BOMS))):
        return None
    if not raw.isascii():
        try:  # pyarrow does not check that the bytes are UTF-8
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    # Every line starts with an object's brace: no blank line (which pyarrow skips), so as many rows as
    # lines means one object a line (a line of two objects would give two rows).
    if not raw.startswith(b"{") or raw.count(b"\n{") != lines - 1:
        return None
    options = pa_json.ReadOptions(use_threads=True, block_size=ARROW_PIECE_BYTES)
    try:
        table = pa_json.read_json(pa.py_buffer(raw), read_options=options)
    except pa.ArrowInvalid:  # bad JSON, a lone surrogate escape, a key twice, a column of two types
        return None
    if table.num_rows != lines:
        return None
    columns = dict(zip(table.column_names, table.columns, strict=True))
    reference = mapping.reference if mapping.reference in columns else None
    reference = reference or next((alias for alias in REFERENCE_ALIASES if alias in columns), None)
    texts = {mapping.prompt, mapping.response, mapping.context, reference} & set(columns)
    if not all(_text(columns[name]) if name in texts else _flat(columns[name]) for name in columns):
        return None
    if mapping.prompt in columns:
        if _any_blank(columns[mapping.prompt]):
            return None
    elif mapping.response not in columns:
        return None  # a record needs a prompt or a response: the row path names the line
    return BlockTally(
        read=lines,
        yielded=lines,
        no_prompt=None if mapping.prompt in columns else number,
        no_response=None if mapping.response in columns else number,
        no_reference=reference is None,
    )


def _text(column: Any) -> bool:
    """A text field the row path takes in every row: a string, an integer or a boolean (made text), or a
    finite double that is not NaN (NaN is how pandas writes "missing")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        return False
    kind = column.type
    if pa.types.is_floating(kind):
        return pc.all(pc.is_finite(column)).as_py()
    return pa.types.is_string(kind) or pa.types.is_int64(kind) or pa.types.is_boolean(kind)


def _flat(column: Any) -> bool:
    """A metadata field pyarrow read as flat values the row path keeps as read (nested ones go there)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_floating(kind):
        return not pc.any(pc.is_inf(column)).as_py()  # NaN is valid JSON to the row path; a huge integer is not
    return pa.types.is_string(kind) or pa.types.is_int64(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)


def _any_blank(column: Any) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(column.type):
        return False  # a number or boolean made text is never blank
    # No Python value goes into a compute call: converting one imports pandas (0.5 s).
    return pc.min(pc.binary_length(pc.utf8_trim(column, characters=_whitespace()))).as_py() == 0


@cache
def _whitespace() -> str:
    """What str.strip() removes: a prompt of these characters alone is "empty" to ``RecordBuilder.build``."""
    return "".join(filter(str.isspace, map(chr, range(sys.maxunicode + 1))))
