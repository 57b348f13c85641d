"""RACE high/middle: lm-eval ``race``'s prompt, applied to every question (lm-eval scores only the last
question of each article; evalstack scores all 4,934, so the per-question counts match the dataset).

Files: ``race/test/<high|middle>/<n>.txt``, each one JSON article (``article``, ``questions``,
``options``, ``answers``). The context of question i is "Article: <article>\\n\\n", then questions
0..i-1 with their answers (fill-in-the-blank questions ending "  _  ." completed inline, the others as
"Question: ...\\nAnswer: ...\\n"), then question i's text; the choices are its four options. acc.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from evalstack.benchmarks.definition import Doc, MultipleChoice, field
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset, Source
from evalstack.catalog.benchmarks import Benchmark

LETTERS = ("A", "B", "C", "D")


def _answered(question: str, answer: str) -> str:
    if question[-6:] == "  _  .":
        return question[:-5] + answer + "\n"
    return f"Question: {question}\nAnswer: {answer}\n"


def article_docs(article: str, problems: list[dict[str, Any]], where: str) -> list[Doc]:
    docs, history = [], ""
    for i, problem in enumerate(problems):
        options, answer = list(problem["options"]), problem["answer"]
        if answer not in LETTERS or len(options) != 4:
            raise ValueError(f"{where}: question {i}: expected 4 options and an answer letter A-D")
        gold = LETTERS.index(answer)
        docs.append({
            "query": f"Article: {article}\n\n{history}{problem['question']}",
            "choices": options,
            "gold": gold,
            "question": f"Article: {article}\n\n{history}Question: {problem['question']}",
            "options": options,
        })  # fmt: skip
        history += _answered(problem["question"], options[gold])
    return docs


class Race(MultipleChoice):
    benchmark = Benchmark.RACE
    loglikelihood_metrics: ClassVar[tuple[str, ...]] = ("acc",)

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        out = []
        for relpath in sorted(source.list(f"race/test/{subtask}", ".txt"), key=_numeric_name):
            where = source.uri(relpath)
            try:
                article = json.loads(source.read_text(relpath))
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: line {err.lineno}: invalid JSON: {err.msg}") from err
            questions = field(article, "questions", where)
            problems = [
                {"question": q, "options": o, "answer": a}
                for q, o, a in zip(questions, field(article, "options", where), field(article, "answers", where),
                                   strict=True)
            ]  # fmt: skip
            stem = relpath.rsplit("/", 1)[-1].removesuffix(".txt")
            for i, doc in enumerate(article_docs(field(article, "article", where), problems, where)):
                out.append((f"{stem}-q{i}", doc))
        return out

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "ehovy/race", subtask, "test")

    def docs(self, source: Source, subtask: str | None) -> list[tuple[str, Doc]]:
        if isinstance(source, FileSource):
            return self.read_files(source, subtask)
        # ehovy/race has one row per question; rows of one article are consecutive and share example_id.
        table = self.hf_table(subtask)
        by_article: dict[str, list[dict[str, Any]]] = {}
        articles: dict[str, str] = {}
        for row in source.rows(table):
            by_article.setdefault(row["example_id"], []).append(row)
            articles[row["example_id"]] = row["article"]
        out = []
        for example_id, rows in by_article.items():
            for i, doc in enumerate(article_docs(articles[example_id], rows, f"ehovy/race {example_id}")):
                out.append((f"{example_id.removesuffix('.txt')}-q{i}", doc))
        return out

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return article_docs(row["article"], [row], "ehovy/race")[0]


def _numeric_name(relpath: str) -> tuple[int, str]:
    stem = relpath.rsplit("/", 1)[-1].removesuffix(".txt")
    return (int(stem), stem) if stem.isdigit() else (1 << 62, stem)
