"""GSM8K: lm-eval ``gsm8k``: "Question: ...\\nAnswer:", 5-shot from train (first five), both filters.

Files: ``gsm8k/test.jsonl`` and, for the shots, ``gsm8k/train.jsonl`` (``{"question", "answer"}``).
- strict-match: regex ``#### (\\-?[0-9\\.\\,]+)``, first match.
- flexible-extract: regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, last match.
Both compared to the full reference answer by exact match with ignore_case and
regexes_to_ignore ``,`` ``\\$`` ``(?s).*#### `` ``\\.$``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evalstack.benchmarks.answers import ExactMatch, RegexFilter
from evalstack.benchmarks.definition import Doc, Generation, field, read_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset, Source
from evalstack.catalog.benchmarks import Benchmark

STRICT = RegexFilter("strict-match", r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = RegexFilter("flexible-extract", r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
MATCH = ExactMatch(regexes_to_ignore=(",", r"\$", "(?s).*#### ", r"\.$"), ignore_case=True)


class Gsm8k(Generation):
    benchmark = Benchmark.GSM8K
    default_fewshot = 5
    stop: ClassVar[tuple[str, ...]] = ("Question:", "</s>", "<|im_end|>")

    def query(self, doc: Doc) -> str:
        return f"Question: {doc['question']}\nAnswer:"

    def target(self, doc: Doc) -> str:
        return str(doc["answer"])

    def _rows(self, source: FileSource, relpath: str) -> list[Doc]:
        out = []
        for lineno, row in enumerate(read_jsonl(source, relpath), start=1):
            where = f"{source.uri(relpath)}: line {lineno}"
            out.append({"question": field(row, "question", where), "answer": field(row, "answer", where)})
        return out

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        return [(f"test-{i}", d) for i, d in enumerate(self._rows(source, "gsm8k/test.jsonl"))]

    def fewshot_pool(self, source: Source, subtask: str | None) -> list[Doc]:
        if isinstance(source, FileSource):
            return self._rows(source, "gsm8k/train.jsonl")
        return [self.from_hf(r, subtask) for r in source.rows(hf_table(self.key, "openai/gsm8k", "main", "train"))]

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "openai/gsm8k", "main", "test")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return {"question": row["question"], "answer": row["answer"]}

    def score(self, doc: Doc, response: str) -> tuple[dict[str, float], dict[str, Any]]:
        strict, flexible = STRICT.apply(response), FLEXIBLE.apply(response)
        scores = {
            "exact_match_strict": MATCH(strict, doc["answer"]),
            "exact_match_flexible": MATCH(flexible, doc["answer"]),
        }
        return scores, {"strict-match": strict, "flexible-extract": flexible}
