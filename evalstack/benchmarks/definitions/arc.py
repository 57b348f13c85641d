"""ARC easy/challenge: lm-eval ``arc_easy``/``arc_challenge``, zero-shot, acc and acc_norm.

Files: ``arc/ARC-Easy/ARC-Easy-Test.jsonl``, ``arc/ARC-Challenge/ARC-Challenge-Test.jsonl``.
"""

from __future__ import annotations

from typing import Any

from evalstack.benchmarks.definition import Doc, MultipleChoice, field, read_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset
from evalstack.catalog.benchmarks import Benchmark

FOLDERS = {"easy": "ARC-Easy", "challenge": "ARC-Challenge"}


def _doc(question: str, texts: list[str], labels: list[str], answer: str, where: str) -> Doc:
    if answer not in labels:
        raise ValueError(f"{where}: answerKey {answer!r} is not one of the choice labels {labels}")
    return {
        "query": f"Question: {question}\nAnswer:",
        "choices": texts,
        "gold": labels.index(answer),
        "question": f"Question: {question}",
        "options": texts,
    }


class Arc(MultipleChoice):
    benchmark = Benchmark.ARC

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        folder = FOLDERS[str(subtask)]
        relpath = f"arc/{folder}/{folder}-Test.jsonl"
        out = []
        for lineno, row in enumerate(read_jsonl(source, relpath), start=1):
            where = f"{source.uri(relpath)}: line {lineno}"
            stem = field(row, "question", where)
            choices = field(stem, "choices", where)
            out.append((str(field(row, "id", where)), _doc(
                field(stem, "stem", where), [c["text"] for c in choices], [c["label"] for c in choices],
                field(row, "answerKey", where), where,
            )))  # fmt: skip
        return out

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "allenai/ai2_arc", FOLDERS[str(subtask)], "test")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row["question"], list(row["choices"]["text"]), list(row["choices"]["label"]),
                    row["answerKey"], f"ai2_arc {row['id']}")  # fmt: skip

    def hf_key(self, row: dict[str, Any], index: int, table: HfDataset) -> str:
        return str(row["id"])
