"""Judge test datasets built from real TruthfulQA questions and answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from evalstack.spec import CustomJudgeMetric, DatasetSpec, EvaluationSpec, JudgeSpec
from tests.support.metrics_data import benchmark_root


def truthfulqa_questions(n: int) -> list[dict[str, str]]:
    """The first ``n`` TruthfulQA rows: question, best answer, first incorrect answer."""
    out = []
    with (benchmark_root() / "truthfulqa" / "TruthfulQA.csv").open(encoding="utf-8-sig", newline="") as f:
        for row, _ in zip(csv.DictReader(f), range(n), strict=False):
            out.append(
                {
                    "question": row["Question"],
                    "best": row["Best Answer"].strip(),
                    "incorrect": row["Incorrect Answers"].split(";")[0].strip(),
                }
            )
    assert len(out) == n
    return out


def write_dataset(path: Path, rows: list[dict[str, str]], *, responses: bool = True, references: bool = True) -> Path:
    """JSONL with prompt (the question), response (the best answer) and reference (the best answer)."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            record = {"prompt": row["question"]}
            if responses:
                record["response"] = row["best"]
            if references:
                record["reference"] = row["best"]
            f.write(json.dumps(record) + "\n")
    return path


def judge_spec(dataset: Path, judge: str, metrics: list[str], **kwargs) -> EvaluationSpec:
    custom = [
        CustomJudgeMetric(**{**m, "scale": tuple(m.get("scale", (1, 5)))}) for m in kwargs.pop("custom_metrics", [])
    ]
    return EvaluationSpec(
        eval_type="llm_as_judge",
        model=kwargs.pop("model", "my-fine-tuned-llm"),
        dataset=DatasetSpec(uri=str(dataset)),
        judge=JudgeSpec(evaluator_model=judge, builtin_metrics=metrics, custom_metrics=custom),
        **kwargs,
    )
