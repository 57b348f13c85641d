"""PIQA: lm-eval ``piqa``: "Question: <goal>\\nAnswer:", choices sol1/sol2, zero-shot, acc and acc_norm.

Files: ``piqa/valid.jsonl`` (``goal``, ``sol1``, ``sol2``) and ``piqa/valid-labels.lst`` (0 or 1 per line).
"""

from __future__ import annotations

from typing import Any

from evalstack.benchmarks.definition import Doc, MultipleChoice, field, read_labelled_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset
from evalstack.catalog.benchmarks import Benchmark


def _doc(goal: str, solutions: list[str], label: int) -> Doc:
    return {"query": f"Question: {goal}\nAnswer:", "choices": solutions, "gold": label,
            "question": f"Question: {goal}", "options": solutions}  # fmt: skip


class Piqa(MultipleChoice):
    benchmark = Benchmark.PIQA

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        relpath, labels_path = "piqa/valid.jsonl", "piqa/valid-labels.lst"
        out = []
        for lineno, where, row, label in read_labelled_jsonl(source, relpath, labels_path):
            if label not in ("0", "1"):
                raise ValueError(f"{source.uri(labels_path)}: line {lineno}: label must be 0 or 1, got {label!r}")
            sols = [field(row, "sol1", where), field(row, "sol2", where)]
            out.append((f"valid-{lineno - 1}", _doc(field(row, "goal", where), sols, int(label))))
        return out

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "baber/piqa", None, "validation")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row["goal"], [row["sol1"], row["sol2"]], int(row["label"]))
