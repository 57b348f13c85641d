"""Dataset records as engine items: the one mapping the custom-scorer and judge tasks share."""

from __future__ import annotations

from collections.abc import Sequence

from evalstack.data.records import Record
from evalstack.task import Item

# A record's item id is its line, so ids are stable across runs and shards: ``item_id(7) == "line-7"``.
item_id = "line-{}".format


def joined_item_ids(lines: Sequence[int]) -> str:
    """``item_id`` of each line, each followed by a newline: one join, not a format call per line."""
    return "line-" + "\nline-".join(map(str, lines)) + "\n" if len(lines) else ""


def record_item(record: Record) -> Item:
    """An item whose id is the record's line (``item_id``)."""
    return Item(
        id=item_id(record.line),
        subtask=None,
        data={
            "line": record.line,
            "prompt": record.prompt,
            "response": record.response,
            "reference": record.reference,
            "context": record.context,
            "metadata": record.metadata,
        },
    )
