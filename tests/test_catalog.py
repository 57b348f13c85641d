"""The catalog's names, subtasks and sizes; the sizes against the full benchmark files (``full_data``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalstack.catalog import (
    BENCHMARKS,
    JUDGE_METRICS,
    Benchmark,
    BuiltInMetric,
    get_benchmark_properties,
    get_benchmarks,
    get_builtin_metrics,
    resolve_judge_metric,
)
from evalstack.evaluate import BenchMarkEvaluator

EXPECTED_BENCHMARKS = [
    "MMLU", "BBH", "MATH", "GSM8K", "HellaSwag", "WinoGrande", "ARC", "TruthfulQA", "PIQA", "BoolQ", "RACE",
]  # fmt: skip


def test_benchmark_enum_lists_the_eleven() -> None:
    assert [b.value for b in get_benchmarks()] == EXPECTED_BENCHMARKS
    assert BenchMarkEvaluator.get_all() == EXPECTED_BENCHMARKS
    assert get_benchmarks().MMLU is Benchmark.MMLU


@pytest.mark.parametrize("spelling", ["mmlu", "MMLU", "Mmlu", " mmlu ", Benchmark.MMLU])
def test_names_are_case_insensitive(spelling: str) -> None:
    assert get_benchmark_properties(spelling)["name"] == "MMLU"


def test_unknown_benchmark_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Unknown benchmark 'MMLU-Pro'") as err:
        get_benchmark_properties("MMLU-Pro")
    for name in EXPECTED_BENCHMARKS:
        assert name in str(err.value)


def test_properties_have_the_reference_keys() -> None:
    for bench in Benchmark:
        props = get_benchmark_properties(bench)
        assert set(props) >= {
            "description",
            "subtasks",
            "dataset_info",
            "metrics",
            "citation",
            "task_type",
            "num_samples",
        }
        assert set(props["dataset_info"]) >= {"source", "split", "size", "licence"}
        assert props["metrics"] and props["citation"] and props["description"]


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle))


def _jsonl_rows(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.mark.full_data
def test_mmlu_subjects_and_size_match_the_files(benchmark_data: Path) -> None:
    files = sorted((benchmark_data / "mmlu" / "test").glob("*_test.csv"))
    assert list(BENCHMARKS[Benchmark.MMLU].subtasks) == [f.name.removesuffix("_test.csv") for f in files]
    assert len(files) == 57
    assert sum(_csv_rows(f) for f in files) == BENCHMARKS[Benchmark.MMLU].num_samples == 14042


@pytest.mark.full_data
def test_bbh_tasks_and_size_match_the_files(benchmark_data: Path) -> None:
    files = sorted((benchmark_data / "bbh" / "bbh").glob("*.json"))
    assert list(BENCHMARKS[Benchmark.BBH].subtasks) == [f.stem for f in files]
    total = sum(len(json.loads(f.read_text(encoding="utf-8"))["examples"]) for f in files)
    assert total == BENCHMARKS[Benchmark.BBH].num_samples == 6511


@pytest.mark.full_data
def test_math_subjects_and_sizes_match_the_file(benchmark_data: Path) -> None:
    counts: dict[str, int] = {}
    for line in (benchmark_data / "math" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        subject = json.loads(line)["type"].lower().replace(" & ", "_and_").replace(" ", "_")
        counts[subject] = counts.get(subject, 0) + 1
    info = BENCHMARKS[Benchmark.MATH]
    assert sorted(counts) == list(info.subtasks)
    assert counts == info.subtask_sizes
    assert sum(counts.values()) == info.num_samples == 5000


@pytest.mark.full_data
@pytest.mark.parametrize(
    ("bench", "relative", "count"),
    [
        (Benchmark.GSM8K, "gsm8k/test.jsonl", _jsonl_rows),
        (Benchmark.WINOGRANDE, "winogrande/dev.jsonl", _jsonl_rows),
        (Benchmark.TRUTHFULQA, "truthfulqa/TruthfulQA.csv", lambda p: _csv_rows(p) - 1),
        (Benchmark.PIQA, "piqa/valid.jsonl", _jsonl_rows),
        (Benchmark.BOOLQ, "boolq/val.jsonl", _jsonl_rows),
    ],
)
def test_single_file_sizes(benchmark_data: Path, bench: Benchmark, relative: str, count) -> None:
    assert count(benchmark_data / relative) == BENCHMARKS[bench].num_samples


@pytest.mark.full_data
def test_arc_and_race_subtask_sizes(benchmark_data: Path) -> None:
    arc = BENCHMARKS[Benchmark.ARC]
    assert arc.subtasks == ("easy", "challenge")
    assert _jsonl_rows(benchmark_data / "arc/ARC-Easy/ARC-Easy-Test.jsonl") == arc.subtask_sizes["easy"]
    assert _jsonl_rows(benchmark_data / "arc/ARC-Challenge/ARC-Challenge-Test.jsonl") == arc.subtask_sizes["challenge"]
    race = BENCHMARKS[Benchmark.RACE]
    for level in race.subtasks:
        questions = sum(
            len(json.loads(f.read_text(encoding="utf-8"))["questions"])
            for f in (benchmark_data / "race" / "test" / level).glob("*.txt")
        )
        assert questions == race.subtask_sizes[level]
    assert sum(race.subtask_sizes.values()) == race.num_samples


def test_builtin_metrics_enum() -> None:
    assert [m.value for m in get_builtin_metrics()] == [
        "accuracy", "f1", "precision", "recall", "bleu", "rouge", "meteor", "bertscore",
    ]  # fmt: skip
    assert get_builtin_metrics().F1 is BuiltInMetric.F1


def test_judge_metrics_are_the_ten() -> None:
    assert list(JUDGE_METRICS) == [
        "helpfulness", "relevance", "correctness", "coherence", "harmfulness",
        "toxicity", "stereotypes", "refusal", "completeness", "conciseness",
    ]  # fmt: skip
    assert resolve_judge_metric("Correctness").needs_reference
    with pytest.raises(ValueError, match="Valid values: helpfulness"):
        resolve_judge_metric("fluency")
