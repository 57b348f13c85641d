"""What one benchmark is: its data adapter, prompt format, few-shot policy, scoring and metrics.

Two kinds, as in lm-evaluation-harness:

- :class:`MultipleChoice` (lm-eval ``output_type: multiple_choice``). A doc holds ``query``
  (lm-eval's ``doc_to_text``), ``choices`` (``doc_to_choice``) and ``gold``; with log-likelihoods
  each choice is scored as ``loglikelihood(context=<description><shots><query>, continuation=" " + choice)``
  (for partial scoring, as WinoGrande, a doc with a ``continuation`` scores
  ``loglikelihood(context=choice, continuation=" " + continuation)`` instead). Without them the
  doc's ``question`` and ``options`` are shown as a lettered list and the answer letter is
  extracted from a generation (:func:`evalstack.benchmarks.answers.extract_letter`).
- :class:`Generation` (``generate_until``): the prompt is rendered, a completion requested with
  the benchmark's stop sequences, and :meth:`Generation.score` extracts and compares the answer.

Few-shot examples are ``fewshot_delimiter``-joined ``query + target_delimiter + target`` blocks
after the description, as lm-eval builds them; pools are taken first-n (lm-eval's ``first_n``
sampler) so prompts are deterministic.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from evalstack.benchmarks.answers import letters
from evalstack.benchmarks.source import FileSource, HfDataset, HfSource, Source
from evalstack.catalog.benchmarks import BENCHMARKS, Benchmark

Doc = dict[str, Any]


class Definition(ABC):
    benchmark: ClassVar[Benchmark]
    kind: ClassVar[str]
    default_fewshot: ClassVar[int] = 0
    fewshot_delimiter: ClassVar[str] = "\n\n"
    target_delimiter: ClassVar[str] = " "

    @property
    def subtasks(self) -> tuple[str, ...]:
        return BENCHMARKS[self.benchmark].subtasks

    @property
    def key(self) -> str:
        return self.benchmark.value.lower()

    def docs(self, source: Source, subtask: str | None) -> list[tuple[str, Doc]]:
        """(stable key, doc) pairs of the evaluation split, in file order."""
        if isinstance(source, HfSource):
            table = self.hf_table(subtask)
            rows = source.rows(table)
            return [(self.hf_key(row, i, table), self.from_hf(row, subtask)) for i, row in enumerate(rows)]
        return self.read_files(source, subtask)

    def hf_key(self, row: dict[str, Any], index: int, table: HfDataset) -> str:
        return f"{table.split}-{index}"

    @abstractmethod
    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]: ...

    @abstractmethod
    def hf_table(self, subtask: str | None) -> HfDataset: ...

    @abstractmethod
    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc: ...

    def fewshot_pool(self, source: Source, subtask: str | None) -> list[Doc]:
        """Few-shot examples in the order they are used (first n); empty when the benchmark is zero-shot."""
        return []

    def description(self, subtask: str | None) -> str:
        return ""

    def query(self, doc: Doc) -> str:
        return str(doc["query"])

    def target(self, doc: Doc) -> str:
        raise NotImplementedError

    def shots_prefix(self, shots: Sequence[Doc], subtask: str | None) -> str:
        blocks = [self.query(s) + self.target_delimiter + self.target(s) for s in shots]
        joined = self.fewshot_delimiter.join(blocks)
        return self.description(subtask) + (joined + self.fewshot_delimiter if blocks else "")


class MultipleChoice(Definition):
    kind = "multiple_choice"
    # acc_norm is reported where lm-eval's task config lists it.
    loglikelihood_metrics: ClassVar[tuple[str, ...]] = ("acc", "acc_norm")

    def target(self, doc: Doc) -> str:
        return str(doc["choices"][doc["gold"]])

    def contexts(self, doc: Doc, prefix: str) -> list[str]:
        if "continuation" in doc:  # partial scoring: the choices are the contexts
            return [prefix + c for c in doc["choices"]]
        return [prefix + self.query(doc)] * len(doc["choices"])

    def continuations(self, doc: Doc) -> list[str]:
        if "continuation" in doc:
            return [self.target_delimiter + doc["continuation"]] * len(doc["choices"])
        return [self.target_delimiter + c for c in doc["choices"]]

    def ll_requests(self, doc: Doc, prefix: str) -> list[tuple[str, str]]:
        """(context, continuation) pairs whose log-likelihoods :meth:`score_loglikelihoods` reads, in order."""
        return list(zip(self.contexts(doc, prefix), self.continuations(doc), strict=True))

    def lettered(self, doc: Doc) -> str:
        lines = [str(doc["question"])]
        options = doc["options"]
        lines += [f"{letter}. {option}" for letter, option in zip(letters(len(options)), options, strict=True)]
        return "\n".join(lines) + "\nAnswer:"

    def lettered_prefix(self, shots: Sequence[Doc], subtask: str | None) -> str:
        blocks = [f"{self.lettered(s)} {letters(len(s['options']))[s['gold']]}" for s in shots]
        joined = self.fewshot_delimiter.join(blocks)
        return self.description(subtask) + (joined + self.fewshot_delimiter if blocks else "")

    def score_loglikelihoods(self, doc: Doc, lls: Sequence[float]) -> dict[str, float]:
        """acc: argmax of the log-likelihoods; acc_norm: argmax of log-likelihood / len(choice text)
        (characters, as lm-eval's ``completion_len``)."""
        gold = doc["gold"]
        pred = _argmax(lls)
        lengths = [float(len(c)) for c in doc["choices"]]
        pred_norm = _argmax([ll / n for ll, n in zip(lls, lengths, strict=True)])
        scores = {"acc": float(pred == gold), "acc_norm": float(pred_norm == gold)}
        return {m: scores[m] for m in self.loglikelihood_metrics}

    def generative_metric(self) -> str:
        return "acc"


class Generation(Definition):
    kind = "generation"
    stop: ClassVar[tuple[str, ...]] = ()

    def prompt(self, doc: Doc, shots: Sequence[Doc], subtask: str | None) -> str:
        return self.shots_prefix(shots, subtask) + self.query(doc)

    @abstractmethod
    def score(self, doc: Doc, response: str) -> tuple[dict[str, float], dict[str, Any]]:
        """(metric -> 0/1 score, what was extracted) for one response."""


def _argmax(values: Sequence[float]) -> int:
    # First maximum, as numpy.argmax.
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


def read_jsonl(source: FileSource, relpath: str) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(source.read_text(relpath).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{source.uri(relpath)}: line {lineno}: invalid JSON: {err.msg}") from err
    return rows


def read_lines(source: FileSource, relpath: str) -> list[str]:
    return [line.strip() for line in source.read_text(relpath).splitlines() if line.strip()]


def read_labelled_jsonl(
    source: FileSource, relpath: str, labels_path: str
) -> list[tuple[int, str, dict[str, Any], str]]:
    """JSONL rows paired with the labels of a separate .lst file, as PIQA and WinoGrande ship them:
    (line number, where the row came from, row, label)."""
    rows, labels = read_jsonl(source, relpath), read_lines(source, labels_path)
    if len(rows) != len(labels):
        raise ValueError(f"{source.uri(labels_path)}: {len(labels)} labels for {len(rows)} rows in {relpath}")
    return [
        (lineno, f"{source.uri(relpath)}: line {lineno}", row, label)
        for lineno, (row, label) in enumerate(zip(rows, labels, strict=True), start=1)
    ]


def field(row: dict[str, Any], name: str, where: str) -> Any:
    """row[name], or a ValueError naming the field and where the row came from."""
    if name not in row:
        raise ValueError(f"{where}: missing field {name!r}")
    return row[name]
