"""Real benchmark text and labels for the metric tests (TruthfulQA answers, BoolQ and MMLU labels)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.conftest import BENCHMARK_DATA


def benchmark_root() -> Path:
    """The tests' benchmark data root: the full data when EVALSTACK_BENCHMARK_DATA is set, else the fixtures."""
    return BENCHMARK_DATA


def truthfulqa_rows(n: int) -> list[dict[str, str]]:
    """The first ``n`` TruthfulQA questions that have at least 2 correct answers besides the best one."""
    rows = []
    with (benchmark_root() / "truthfulqa" / "TruthfulQA.csv").open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            others = [a.strip() for a in row["Correct Answers"].split(";") if a.strip() != row["Best Answer"].strip()]
            if len(others) >= 2:
                rows.append({"best": row["Best Answer"].strip(), "others": others, "question": row["Question"]})
            if len(rows) == n:
                return rows
    raise AssertionError(f"TruthfulQA has fewer than {n} usable rows")


def boolq_labels(n: int) -> list[str]:
    with (benchmark_root() / "boolq" / "val.jsonl").open(encoding="utf-8") as f:
        labels = [str(json.loads(line)["label"]) for _, line in zip(range(n), f, strict=False)]
    if len(labels) < n:
        raise AssertionError(f"BoolQ has fewer than {n} rows under {benchmark_root()}")
    return labels


def mmlu_answers(subject: str = "high_school_biology") -> list[str]:
    with (benchmark_root() / "mmlu" / "val" / f"{subject}_val.csv").open(encoding="utf-8", newline="") as f:
        return [row[5] for row in csv.reader(f)]


def perturb(labels: list[str], every: int, choices: list[str]) -> list[str]:
    """Replace every ``every``-th label by the next one in ``choices``: a deterministic imperfect classifier."""
    return [
        choices[(choices.index(label) + 1) % len(choices)] if i % every == 0 else label
        for i, label in enumerate(labels)
    ]
