"""MMLU: lm-eval ``mmlu`` default template, 5-shot from the dev split (first five), acc micro-averaged.

Files: ``mmlu/test/<subject>_test.csv`` and ``mmlu/dev/<subject>_dev.csv`` (header-less CSV:
question, A, B, C, D, answer letter).
"""

from __future__ import annotations

import csv
import io
from typing import Any, ClassVar

from evalstack.benchmarks.definition import Doc, MultipleChoice
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset, Source
from evalstack.catalog.benchmarks import Benchmark

LETTERS = ("A", "B", "C", "D")


def _doc(question: str, options: list[str], gold: int) -> Doc:
    listed = "".join(f"\n{letter}. {opt}" for letter, opt in zip(LETTERS, options, strict=True))
    query = question.strip() + listed + "\nAnswer:"
    return {"query": query, "choices": list(LETTERS), "gold": gold, "question": question.strip(), "options": options}


def read_csv(source: FileSource, relpath: str) -> list[Doc]:
    docs = []
    reader = csv.reader(io.StringIO(source.read_text(relpath), newline=""))
    for row in reader:
        if len(row) != 6 or row[5].strip() not in LETTERS:
            raise ValueError(
                f"{source.uri(relpath)}: line {reader.line_num}: expected 6 columns ending in an answer letter A-D"
            )
        docs.append(_doc(row[0], row[1:5], LETTERS.index(row[5].strip())))
    return docs


class Mmlu(MultipleChoice):
    benchmark = Benchmark.MMLU
    default_fewshot = 5
    loglikelihood_metrics: ClassVar[tuple[str, ...]] = ("acc",)

    def description(self, subtask: str | None) -> str:
        subject = (subtask or "").replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}.\n\n"

    def lettered(self, doc: Doc) -> str:
        return str(doc["query"])  # the MMLU prompt already lists lettered options

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        return [(f"test-{i}", d) for i, d in enumerate(read_csv(source, f"mmlu/test/{subtask}_test.csv"))]

    def fewshot_pool(self, source: Source, subtask: str | None) -> list[Doc]:
        if isinstance(source, FileSource):
            return read_csv(source, f"mmlu/dev/{subtask}_dev.csv")
        return [self.from_hf(row, subtask) for row in source.rows(self._table(subtask, "dev"))]

    def _table(self, subtask: str | None, split: str) -> HfDataset:
        return hf_table(self.key, "cais/mmlu", subtask, split)

    def hf_table(self, subtask: str | None) -> HfDataset:
        return self._table(subtask, "test")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row["question"], list(row["choices"]), int(row["answer"]))
