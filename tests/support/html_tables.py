"""Read the tables of an HTML page (stdlib html.parser): table id -> rows -> cells with their attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Cell:
    text: str
    attrs: dict[str, str]

    @property
    def value(self) -> float | None:
        raw = self.attrs.get("data-value")
        return float(raw) if raw not in (None, "") else None


@dataclass
class Row:
    attrs: dict[str, str]
    cells: list[Cell] = field(default_factory=list)


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[Row]] = {}
        self._table: list[Row] | None = None
        self._cell: Cell | None = None
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = self.tables.setdefault(values.get("id", f"table-{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append(Row(values))
        elif tag in ("td", "th") and self._table:
            self._cell = Cell("", values)
            self._table[-1].cells.append(self._cell)
        elif tag == "a":
            self.links.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data


def parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def body_rows(rows: list[Row]) -> list[Row]:
    """Rows without the header row (every table here has one)."""
    return rows[1:]
