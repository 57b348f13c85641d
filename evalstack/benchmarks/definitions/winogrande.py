"""WinoGrande: lm-eval ``winogrande`` partial scoring: each option fills the blank to form a context,
and the shared rest of the sentence is the continuation. Zero-shot.

Files: ``winogrande/dev.jsonl`` (``qID``, ``sentence`` with one ``_``, ``option1``, ``option2``,
``answer``) and ``winogrande/dev-labels.lst`` (one label per line, checked against ``answer``).
acc (lm-eval's metric) and acc_norm as lm-eval's multiple-choice scoring defines it: log-likelihood
divided by the character length of the choice, which here is the context (sentence up to the blank
plus the option), since lm-eval's ``doc_to_choice`` for WinoGrande returns the contexts.
"""

from __future__ import annotations

from typing import Any

from evalstack.benchmarks.definition import Doc, MultipleChoice, field, read_labelled_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset
from evalstack.catalog.benchmarks import Benchmark


def _doc(sentence: str, options: list[str], answer: str, where: str) -> Doc:
    if sentence.count("_") < 1:
        raise ValueError(f"{where}: sentence has no '_' blank")
    if answer not in ("1", "2"):
        raise ValueError(f"{where}: answer must be '1' or '2', got {answer!r}")
    blank = sentence.index("_")
    return {
        "choices": [sentence[:blank] + option for option in options],
        "continuation": sentence[blank + 1 :].strip(),
        "gold": int(answer) - 1,
        "question": sentence,
        "options": options,
    }


class WinoGrande(MultipleChoice):
    benchmark = Benchmark.WINOGRANDE

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        relpath, labels_path = "winogrande/dev.jsonl", "winogrande/dev-labels.lst"
        out = []
        for _, where, row, label in read_labelled_jsonl(source, relpath, labels_path):
            if str(row.get("answer", label)) != label:
                raise ValueError(f"{where}: answer {row.get('answer')!r} disagrees with {labels_path} ({label!r})")
            options = [field(row, "option1", where), field(row, "option2", where)]
            out.append((str(field(row, "qID", where)), _doc(field(row, "sentence", where), options, label, where)))
        return out

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "allenai/winogrande", "winogrande_xl", "validation")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row["sentence"], [row["option1"], row["option2"]], str(row["answer"]), "winogrande")
