"""The in-repo benchmark fixtures: every benchmark runs on them, they stay small and documented, and
(with the full data root) they are cut from the original files, which match their SHA256SUMS."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from evalstack.benchmarks.source import FileSource
from evalstack.benchmarks.task import BenchmarkTask
from evalstack.catalog.benchmarks import Benchmark
from tests.conftest import FIXTURE_DATA
from tests.support.scripted_benchmarks import benchmark_spec

# Written for the tests, so not in the full data (see the fixtures' MANIFEST.md).
SYNTHETIC = ("race/", "hellaswag/")
DOCS = {"MANIFEST.md", "README.md"}


def fixture_files() -> list[str]:
    return sorted(p.relative_to(FIXTURE_DATA).as_posix() for p in FIXTURE_DATA.rglob("*") if p.is_file())


def fixture_subtasks(benchmark: Benchmark) -> list[str] | None:
    """The subtasks the fixture has files for (MMLU and BBH hold a few); None means all."""
    if benchmark is Benchmark.MMLU:
        return sorted(p.name.removesuffix("_test.csv") for p in (FIXTURE_DATA / "mmlu" / "test").glob("*_test.csv"))
    if benchmark is Benchmark.BBH:
        return sorted(p.stem for p in (FIXTURE_DATA / "bbh" / "bbh").glob("*.json"))
    return None


@pytest.mark.parametrize("benchmark", list(Benchmark))
def test_every_benchmark_runs_on_the_fixtures(benchmark: Benchmark) -> None:
    spec = benchmark_spec(benchmark.value, fixture_subtasks(benchmark))
    task = BenchmarkTask(spec, source=FileSource(str(FIXTURE_DATA)))
    items = task.items()
    assert items and len({it.id for it in items}) == len(items)
    assert {it.subtask for it in items} == set(task.subtasks)
    for subtask in task.subtasks:  # the few-shot sources are there too
        assert len(task.shots(subtask)) == task.definition.default_fewshot
    assert len(task.dataset_sha256()) == 64


def test_fixtures_are_small_and_every_folder_is_documented() -> None:
    assert sum((FIXTURE_DATA / rel).stat().st_size for rel in fixture_files()) < 512 * 1024
    manifest = (FIXTURE_DATA / "MANIFEST.md").read_text(encoding="utf-8")
    folders = {rel.split("/", 1)[0] for rel in fixture_files() if "/" in rel}
    assert folders == {b.value.lower() for b in Benchmark}
    for folder in folders:
        assert f"`{folder}/" in manifest, folder
    for rel in fixture_files():
        if rel.startswith("race/"):
            article = json.loads((FIXTURE_DATA / rel).read_text(encoding="utf-8"))["article"]
            assert article.startswith("This is a synthetic passage written for evalstack's tests"), rel


def csv_records(text: str) -> list[str]:
    """The raw text of each CSV record (a quoted field may span lines)."""
    lines = text.splitlines(keepends=True)
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in lines:
            consumed.append(line)
            yield line

    records = []
    for _ in csv.reader(feed()):
        records.append("".join(consumed))
        consumed.clear()
    return records


def units(relpath: str, data: bytes) -> Sequence[object]:
    """What a fixture file is cut into: lines, CSV records, BBH examples or TruthfulQA items."""
    if relpath.endswith((".jsonl", ".lst")):
        return [line.rstrip(b"\r\n") for line in data.splitlines() if line.strip()]
    if relpath.endswith(".csv"):
        return csv_records(data.decode("utf-8"))
    if relpath.startswith("bbh/bbh/"):
        parsed = json.loads(data)
        return [parsed["canary"], *parsed["examples"]]
    if relpath == "truthfulqa/data/mc_task.json":
        return json.loads(data)
    return [data]  # copied whole


def is_subsequence(small: Sequence[object], big: Sequence[object]) -> bool:
    remaining = iter(big)
    return all(any(unit == other for other in remaining) for unit in small)


@pytest.mark.full_data
def test_fixtures_are_cut_from_the_full_files(benchmark_data: Path) -> None:
    checked = 0
    for rel in fixture_files():
        if rel.startswith(SYNTHETIC) or rel in DOCS:
            continue
        small = units(rel, (FIXTURE_DATA / rel).read_bytes())
        big = units(rel, (benchmark_data / rel).read_bytes())
        assert small and is_subsequence(small, big), rel
        checked += 1
    assert checked >= 25


@pytest.mark.full_data
def test_full_data_matches_its_sha256sums(benchmark_data: Path) -> None:
    lines = (benchmark_data / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    listed = dict(reversed(line.split(maxsplit=1)) for line in lines if line.strip())
    wrong = [
        rel for rel, sha in listed.items() if hashlib.sha256((benchmark_data / rel).read_bytes()).hexdigest() != sha
    ]
    assert wrong == []
    assert len(listed) > 1000
