"""``evalstack data fetch``: a benchmark's files, in the original layout a data root holds (see
shared/benchmarks/MANIFEST.md), written from the HF datasets at their pinned revisions.

Each writer loads the same tables the HF adapter of the benchmark reads (so the same pins, see
:mod:`evalstack.benchmarks.hf`) and writes them back in the original file format, so a root filled
this way reads through :class:`~evalstack.benchmarks.source.FileSource` to the docs
``EVALSTACK_BENCHMARK_DATA=hf`` gives. Only what the benchmark reads is written (the evaluation
split and the few-shot source). BBH is not on the hub with its chain-of-thought prompts, so it is
refused with where to get it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from evalstack import storage
from evalstack.benchmarks.definitions import DEFINITIONS
from evalstack.benchmarks.definitions.hendrycks_math import subject_key
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import DATA_ENV, HF_MIRROR_ENV, HF_SOURCE, HfDataset, HfSource
from evalstack.catalog.benchmarks import Benchmark, resolve_benchmark

Files = dict[str, bytes]
LETTERS = "ABCD"


class FetchError(RuntimeError):
    """A table could not be loaded (no network, no mirror, an unknown revision...)."""


def _jsonl(rows: Iterable[dict[str, Any]], separators: tuple[str, str] = (", ", ": ")) -> bytes:
    # json.dumps' defaults (ASCII escapes) are how the original releases wrote their JSONL files.
    return "".join(json.dumps(row, separators=separators) + "\n" for row in rows).encode("utf-8")


def _lines(values: Iterable[object]) -> bytes:
    return "".join(f"{value}\n" for value in values).encode("utf-8")


def _csv(rows: Iterable[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


class _Tables:
    """Loads tables from ``source``, turning any loading failure into a FetchError naming the table."""

    def __init__(self, source: HfSource) -> None:
        self.source = source

    def rows(self, table: HfDataset) -> list[dict[str, Any]]:
        try:
            return self.source.rows(table)
        except Exception as err:  # datasets raises many types (connection, offline, not found); all say "no table"
            where = f"mirror {self.source.mirror}" if self.source.mirror else "the HF hub"
            raise FetchError(
                f"HF dataset {table.path!r} (config {table.name}, split {table.split}, revision {table.revision}) "
                f"could not be loaded from {where}: {type(err).__name__}: {err}. `evalstack data fetch` needs network "
                f"access to huggingface.co (or {HF_MIRROR_ENV} naming a local mirror)"
            ) from err

    def of(self, benchmark: Benchmark, subtask: str | None) -> list[dict[str, Any]]:
        return self.rows(DEFINITIONS[benchmark].hf_table(subtask))


def _mmlu(tables: _Tables) -> Files:
    files = {}
    for subject in DEFINITIONS[Benchmark.MMLU].subtasks:
        for split in ("test", "dev"):
            rows = tables.rows(hf_table("mmlu", "cais/mmlu", subject, split))
            files[f"mmlu/{split}/{subject}_{split}.csv"] = _csv(
                [r["question"], *r["choices"], LETTERS[int(r["answer"])]] for r in rows
            )
    return files


def _bbh(tables: _Tables) -> Files:
    raise ValueError(
        "BBH: its chain-of-thought prompts (cot-prompts/) are not on the HF hub; copy the bbh/ and cot-prompts/ "
        "folders of github.com/suzgunmirac/BIG-Bench-Hard (MIT) to <root>/bbh/bbh and <root>/bbh/cot-prompts"
    )


def _math(tables: _Tables) -> Files:
    rows = []
    for subject in DEFINITIONS[Benchmark.MATH].subtasks:
        # idx counts within the subject, so item ids ("test-<idx>") are the ones the HF path gives.
        for idx, row in enumerate(tables.of(Benchmark.MATH, subject)):
            if subject_key(row["type"]) != subject:
                raise ValueError(f"EleutherAI/hendrycks_math {subject}: row {idx} has type {row['type']!r}")
            rows.append({k: row[k] for k in ("problem", "level", "type", "solution")} | {"idx": idx})
    return {"math/test.jsonl": _jsonl(rows)}


def _gsm8k(tables: _Tables) -> Files:
    return {
        f"gsm8k/{split}.jsonl": _jsonl(
            {"question": r["question"], "answer": r["answer"]}
            for r in tables.rows(hf_table("gsm8k", "openai/gsm8k", "main", split))
        )
        for split in ("test", "train")
    }


def _hellaswag(tables: _Tables) -> Files:
    rows = tables.of(Benchmark.HELLASWAG, None)
    return {"hellaswag/hellaswag_val.jsonl": _jsonl({**r, "label": int(r["label"])} for r in rows)}


def _winogrande(tables: _Tables) -> Files:
    rows = tables.of(Benchmark.WINOGRANDE, None)
    # The hub rows have no qID: the HF adapter's key for row i ("validation-<i>") stands in, so ids agree.
    dev = [
        {"qID": f"validation-{i}", "sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"],
         "answer": str(r["answer"])}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    return {"winogrande/dev.jsonl": _jsonl(dev), "winogrande/dev-labels.lst": _lines(r["answer"] for r in dev)}


def _arc(tables: _Tables) -> Files:
    files = {}
    for subtask, folder in (("easy", "ARC-Easy"), ("challenge", "ARC-Challenge")):
        rows = []
        for r in tables.of(Benchmark.ARC, subtask):
            choices = zip(r["choices"]["text"], r["choices"]["label"], strict=True)
            stem = {"stem": r["question"], "choices": [{"text": text, "label": label} for text, label in choices]}
            rows.append({"id": r["id"], "question": stem, "answerKey": r["answerKey"]})
        files[f"arc/{folder}/{folder}-Test.jsonl"] = _jsonl(rows, separators=(",", ":"))  # ARC's compact form
    return files


def _truthfulqa(tables: _Tables) -> Files:
    def targets(column: dict[str, list[Any]]) -> dict[str, int]:
        return {choice: int(label) for choice, label in zip(column["choices"], column["labels"], strict=True)}

    rows = [
        {"question": r["question"], "mc1_targets": targets(r["mc1_targets"]), "mc2_targets": targets(r["mc2_targets"])}
        for r in tables.of(Benchmark.TRUTHFULQA, None)
    ]
    return {"truthfulqa/data/mc_task.json": json.dumps(rows, indent=2).encode("utf-8")}


def _piqa(tables: _Tables) -> Files:
    rows = tables.of(Benchmark.PIQA, None)
    return {
        "piqa/valid.jsonl": _jsonl({"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"]} for r in rows),
        "piqa/valid-labels.lst": _lines(int(r["label"]) for r in rows),
    }


def _boolq(tables: _Tables) -> Files:
    rows = tables.of(Benchmark.BOOLQ, None)
    return {
        "boolq/val.jsonl": _jsonl(
            {"question": r["question"], "passage": r["passage"], "idx": r["idx"], "label": bool(r["label"])}
            for r in rows
        )
    }


def _race(tables: _Tables) -> Files:
    files = {}
    for level in DEFINITIONS[Benchmark.RACE].subtasks:
        articles: dict[str, dict[str, Any]] = {}
        for row in tables.of(Benchmark.RACE, level):
            article = articles.setdefault(
                row["example_id"], {"answers": [], "options": [], "questions": [], "article": row["article"]}
            )
            article["answers"].append(row["answer"])
            article["options"].append(list(row["options"]))
            article["questions"].append(row["question"])
        for example_id, article in articles.items():
            # "high10001.txt" was high/10001.txt in the original release.
            name = example_id.removeprefix(level).removesuffix(".txt")
            files[f"race/test/{level}/{name}.txt"] = json.dumps({**article, "id": example_id}).encode("utf-8")
    return files


WRITERS: dict[Benchmark, Callable[[_Tables], Files]] = {
    Benchmark.MMLU: _mmlu, Benchmark.BBH: _bbh, Benchmark.MATH: _math, Benchmark.GSM8K: _gsm8k,
    Benchmark.HELLASWAG: _hellaswag, Benchmark.WINOGRANDE: _winogrande, Benchmark.ARC: _arc,
    Benchmark.TRUTHFULQA: _truthfulqa, Benchmark.PIQA: _piqa, Benchmark.BOOLQ: _boolq, Benchmark.RACE: _race,
}  # fmt: skip


def default_root() -> str | None:
    """EVALSTACK_BENCHMARK_DATA when it names a folder or prefix (not ``hf``)."""
    root = os.environ.get(DATA_ENV)
    return root if root and root != HF_SOURCE else None


def fetch(benchmark: str, root: str, source: HfSource | None = None) -> list[str]:
    """Write ``benchmark``'s files under ``root`` (each atomically); the relative paths written, sorted.

    Every table is loaded before anything is written, so a failed fetch leaves the root as it was.
    """
    bench = resolve_benchmark(benchmark)
    tables = _Tables(source or HfSource(os.environ.get(HF_MIRROR_ENV) or None))
    files = WRITERS[bench](tables)
    for relpath, data in sorted(files.items()):
        # A re-fetch refreshes a data copy; only evaluation outputs are write-once.
        storage.write_bytes(storage.join(root, relpath), data, replace=True)
    return sorted(files)
