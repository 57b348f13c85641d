"""BoolQ: lm-eval ``boolq`` (SuperGLUE): "<passage>\\nQuestion: <question>?\\nAnswer:", choices no/yes, acc.

File: ``boolq/val.jsonl`` (SuperGLUE packaging: ``question``, ``passage`` = "<title> -- <text>",
``idx``, ``label`` bool), the same text lm-eval reads from super_glue/boolq.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evalstack.benchmarks.definition import Doc, MultipleChoice, field, read_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset
from evalstack.catalog.benchmarks import Benchmark


def _doc(passage: str, question: str, label: bool) -> Doc:
    return {"query": f"{passage}\nQuestion: {question}?\nAnswer:", "choices": ["no", "yes"], "gold": int(label),
            "question": f"{passage}\nQuestion: {question}?", "options": ["no", "yes"]}  # fmt: skip


class BoolQ(MultipleChoice):
    benchmark = Benchmark.BOOLQ
    loglikelihood_metrics: ClassVar[tuple[str, ...]] = ("acc",)

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        relpath = "boolq/val.jsonl"
        out = []
        for lineno, row in enumerate(read_jsonl(source, relpath), start=1):
            where = f"{source.uri(relpath)}: line {lineno}"
            label = field(row, "label", where)
            if not isinstance(label, bool):
                raise ValueError(f"{where}: field 'label' must be a JSON boolean, got {label!r}")
            doc = _doc(field(row, "passage", where), field(row, "question", where), label)
            out.append((f"val-{field(row, 'idx', where)}", doc))
        return out

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "aps/super_glue", "boolq", "validation")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row["passage"], row["question"], bool(row["label"]))

    def hf_key(self, row: dict[str, Any], index: int, table: HfDataset) -> str:
        return f"val-{row['idx']}"
