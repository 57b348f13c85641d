"""HellaSwag: lm-eval ``hellaswag``: the preprocessed "<activity>: <ctx_a> <Ctx_b>" query, 4 endings,
zero-shot, acc and acc_norm.

File: ``hellaswag/hellaswag_val.jsonl`` in rowanz/hellaswag's original format (``ind``,
``activity_label``, ``ctx_a``, ``ctx_b``, ``ctx``, ``endings``, ``label``, ``split``, ``split_type``,
``source_id``). shared/benchmarks has no copy (see its MANIFEST.md); the tests use a hand-written
fixture in that format.
"""

from __future__ import annotations

import re
from typing import Any

from evalstack.benchmarks.definition import Doc, MultipleChoice, field, read_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset
from evalstack.catalog.benchmarks import Benchmark


def preprocess(text: str) -> str:
    # WikiHow contexts carry "[title]"/"[step]" markers; lm-eval turns " [title]" into ". " and drops the rest.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _doc(row: dict[str, Any], where: str) -> Doc:
    ctx = field(row, "ctx_a", where) + " " + field(row, "ctx_b", where).capitalize()
    query = preprocess(field(row, "activity_label", where) + ": " + ctx)
    endings = [preprocess(e) for e in field(row, "endings", where)]
    return {"query": query, "choices": endings, "gold": int(field(row, "label", where)),
            "question": query, "options": endings}  # fmt: skip


class HellaSwag(MultipleChoice):
    benchmark = Benchmark.HELLASWAG

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        relpath = "hellaswag/hellaswag_val.jsonl"
        out = []
        for lineno, row in enumerate(read_jsonl(source, relpath), start=1):
            where = f"{source.uri(relpath)}: line {lineno}"
            out.append((f"val-{field(row, 'ind', where)}", _doc(row, where)))
        return out

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "Rowan/hellaswag", None, "validation")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row, f"Rowan/hellaswag {row.get('ind')}")

    def hf_key(self, row: dict[str, Any], index: int, table: HfDataset) -> str:
        return f"val-{row['ind']}"
