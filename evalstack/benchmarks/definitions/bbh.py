"""BBH: lm-eval ``bbh_cot_fewshot``: 3-shot chain of thought from the task's cot-prompts file.

Files: ``bbh/bbh/<task>.json`` (``{"examples": [{"input", "target"}]}``) and
``bbh/cot-prompts/<task>.txt`` (canary, ``-----``, a one-line description, then
``Q: ...\\nA: Let's think step by step. ...`` exemplars separated by blank lines).
Answer: lm-eval's ``get-answer`` filter, regex ``(?<=the answer is )(.*)(?=.)``, first match;
exact match against the target with no normalisation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from evalstack.benchmarks.answers import RegexFilter
from evalstack.benchmarks.definition import Doc, Generation
from evalstack.benchmarks.source import FileSource, HfDataset, Source
from evalstack.catalog.benchmarks import Benchmark

COT_MARK = "\nA: Let's think step by step."
GET_ANSWER = RegexFilter("get-answer", r"(?<=the answer is )(.*)(?=.)")


def _no_hf() -> ValueError:
    return ValueError("BBH needs its cot-prompts files: read it from a file data root, not EVALSTACK_BENCHMARK_DATA=hf")


def parse_cot_prompt(text: str, where: str) -> tuple[str, list[Doc]]:
    """(description, exemplars) of a cot-prompts file; each exemplar is {"input", "target"}."""
    if "-----\n" not in text:
        raise ValueError(f"{where}: no '-----' separator line")
    body = text.split("-----\n", 1)[1]
    description, _, rest = body.partition("\n\n")
    shots = []
    for block in ("\n\n" + rest).split("\n\nQ: ")[1:]:
        if COT_MARK not in block:
            raise ValueError(f"{where}: exemplar without {COT_MARK.strip()!r}: {block[:60]!r}")
        question, _, reasoning = block.partition(COT_MARK)
        shots.append({"input": question, "target": reasoning.strip()})
    return description.strip(), shots


class Bbh(Generation):
    benchmark = Benchmark.BBH
    default_fewshot = 3
    target_delimiter = ""
    # lm-eval stops at "Q"; "Q:" is used so answers containing a capital Q are not cut (documented).
    stop: ClassVar[tuple[str, ...]] = ("</s>", "Q:", "\n\n")

    def _cot(self, source: FileSource, subtask: str | None) -> tuple[str, list[Doc]]:
        relpath = f"bbh/cot-prompts/{subtask}.txt"
        return parse_cot_prompt(source.read_text(relpath), source.uri(relpath))

    def prompt(self, doc: Doc, shots: Sequence[Doc], subtask: str | None) -> str:
        blocks = [self.query(s) + self.target_delimiter + self.target(s) for s in shots]
        return doc["description"] + "\n\n" + "".join(b + self.fewshot_delimiter for b in blocks) + self.query(doc)

    def query(self, doc: Doc) -> str:
        return f"Q: {doc['input']}\nA: Let's think step by step.\n"

    def target(self, doc: Doc) -> str:
        return str(doc["target"])

    def fewshot_pool(self, source: Source, subtask: str | None) -> list[Doc]:
        if not isinstance(source, FileSource):
            raise _no_hf()
        return self._cot(source, subtask)[1]

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        relpath = f"bbh/bbh/{subtask}.json"
        try:
            examples = json.loads(source.read_text(relpath))["examples"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{source.uri(relpath)}: expected a JSON object with 'examples': {err}") from err
        description = self._cot(source, subtask)[0]
        return [
            (str(i), {"input": e["input"], "target": e["target"], "description": description})
            for i, e in enumerate(examples)
        ]

    def hf_table(self, subtask: str | None) -> HfDataset:
        raise _no_hf()

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        raise _no_hf()

    def score(self, doc: Doc, response: str) -> tuple[dict[str, float], dict[str, Any]]:
        answer = GET_ANSWER.apply(response)
        return {"exact_match": float(answer == doc["target"])}, {"get-answer": answer}
