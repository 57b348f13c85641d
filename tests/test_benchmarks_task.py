"""BenchmarkTask mechanics: subtask selection, stratified limit, determinism, dataset hash,
S3 and HF sources, bad input, and an end-to-end base-versus-candidate run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest

from evalstack import storage
from evalstack.benchmarks.task import BenchmarkTask, allocate
from evalstack.catalog.benchmarks import BENCHMARKS, MMLU_SUBJECTS, Benchmark
from evalstack.engine.run import evaluate_in_process
from evalstack.spec import EvaluationSpec
from tests.support.openai_server import serve
from tests.support.scripted_benchmarks import benchmark_spec


def unvalidated(benchmark: str, subtasks: list[str] | None) -> EvaluationSpec:
    return EvaluationSpec(eval_type="benchmark", model="scripted", benchmark=benchmark, subtasks=subtasks)


def test_unknown_subtask_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        BenchmarkTask(unvalidated("MMLU", ["anatomy", "astrology"]))
    message = str(err.value)
    assert "['astrology']" in message
    assert all(subject in message for subject in MMLU_SUBJECTS)
    with pytest.raises(ValueError, match=r"GSM8K has no subtasks.*Valid subtasks: \(none\)"):
        BenchmarkTask(unvalidated("GSM8K", ["main"]))
    task = BenchmarkTask(unvalidated("ARC", ["CHALLENGE"]))
    assert task.subtasks == ["challenge"]


def test_limit_is_stratified_by_largest_remainder() -> None:
    # MATH sizes 1187/474/479/903/540/871/546 of 5000; 50 -> quotas 11.87 4.74 4.79 9.03 5.40 8.71 5.46.
    # The fixture's 14/6/6/11/6/10/6 of 59 -> quotas 11.86 5.08 5.08 9.32 5.08 8.47 5.08: the same counts.
    task = BenchmarkTask(benchmark_spec("MATH", limit=50))
    items = task.items()
    counts = {s: sum(1 for it in items if it.subtask == s) for s in task.subtasks}
    assert counts == {
        "algebra": 12, "counting_and_probability": 5, "geometry": 5, "intermediate_algebra": 9,
        "number_theory": 5, "prealgebra": 9, "precalculus": 5,
    }  # fmt: skip
    assert allocate(3, [10, 10, 10, 10]) == [1, 1, 1, 0]
    assert allocate(100, [3, 4]) == [3, 4]
    assert len({it.id for it in items}) == 50


def test_same_seed_same_items_other_seed_other_items(benchmark_data: Path) -> None:
    first = [it.id for it in BenchmarkTask(benchmark_spec("RACE", limit=40, seed=7)).items()]
    again = [it.id for it in BenchmarkTask(benchmark_spec("RACE", limit=40, seed=7)).items()]
    other = [it.id for it in BenchmarkTask(benchmark_spec("RACE", limit=40, seed=8)).items()]
    assert first == again
    assert first != other
    full = BenchmarkTask(benchmark_spec("RACE")).items()
    articles = (json.loads(path.read_text()) for path in (benchmark_data / "race" / "test").glob("*/*.txt"))
    assert len(full) == sum(len(article["questions"]) for article in articles) > 40
    assert [it.id for it in full if it.id in set(first)] == first  # kept in file order


def answer_gsm8k(path: str, body: dict) -> str:
    question = body["prompt"].rsplit("Question: ", 1)[1]
    return f"#### {len(question) % 7}"


def test_repeated_runs_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = benchmark_spec("GSM8K", limit=12, seed=3)
    outputs = []
    with serve(answer_gsm8k) as server:
        for name in ("one", "two"):
            # A fresh response cache each time, so the second run really asks the server again.
            monkeypatch.setenv("EVALSTACK_CACHE", str(tmp_path / f"{name}.sqlite"))
            spec.model = f"openai:{server.base_url}?model=scripted&api=completions"
            evaluate_in_process(spec, str(tmp_path / name))
            outputs.append({
                f: (tmp_path / name / f).read_bytes() for f in ("results.json", "samples.jsonl", "report.md")
            })  # fmt: skip
        assert len(server.requests) == 24
    assert outputs[0] == outputs[1]
    results = json.loads(outputs[0]["results.json"])
    assert results["num_samples"] == 12
    assert results["details"]["scoring_mode"] == "generate"


def expected_sha(root: Path, relpaths: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(relpaths):
        digest.update(f"{rel}\0{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def test_dataset_sha256_covers_exactly_the_files_read(benchmark_data: Path) -> None:
    arc = BenchmarkTask(benchmark_spec("ARC", ["easy"], limit=5))
    assert arc.dataset_sha256() == expected_sha(benchmark_data, ["arc/ARC-Easy/ARC-Easy-Test.jsonl"])
    mmlu = BenchmarkTask(benchmark_spec("MMLU", ["anatomy"]))
    assert mmlu.dataset_sha256() == expected_sha(
        benchmark_data, ["mmlu/test/anatomy_test.csv", "mmlu/dev/anatomy_dev.csv"]
    )
    zero_shot = BenchmarkTask(benchmark_spec("MMLU", ["anatomy"], num_fewshot=0))
    assert zero_shot.dataset_sha256() == expected_sha(benchmark_data, ["mmlu/test/anatomy_test.csv"])


def test_s3_copy_gives_the_same_items_and_hash(benchmark_data: Path, aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("s3").create_bucket(Bucket="bench-data")
    for rel in ("winogrande/dev.jsonl", "winogrande/dev-labels.lst"):
        storage.write_bytes(f"s3://bench-data/copy/{rel}", (benchmark_data / rel).read_bytes())
    local = BenchmarkTask(benchmark_spec("WinoGrande", limit=9))
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", "s3://bench-data/copy")
    remote = BenchmarkTask(benchmark_spec("WinoGrande", limit=9))
    assert remote.source.description == "s3://bench-data/copy"
    assert remote.items() == local.items()
    assert remote.dataset_sha256() == local.dataset_sha256()


def test_hf_source_refuses_an_unpinned_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", "hf")
    with pytest.raises(ValueError, match=r"no pinned revision for HF dataset 'ehovy/race'.*EVALSTACK_HF_REVISION_RACE"):
        BenchmarkTask(benchmark_spec("RACE")).items()
    monkeypatch.setenv("EVALSTACK_HF_REVISION_RACE", "main")
    with pytest.raises(ValueError, match="EVALSTACK_HF_REVISION_RACE: 'main' is not a 40-hex commit sha"):
        BenchmarkTask(benchmark_spec("RACE")).items()


def test_bad_csv_row_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    (folder / "anatomy_test.csv").write_text('What?,a,b,c,d,A\n"Broken, row",a,b,c,E\n')
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"anatomy_test\.csv: line 2: expected 6 columns"):
        BenchmarkTask(benchmark_spec("MMLU", ["anatomy"], num_fewshot=0)).items()


def test_num_fewshot_beyond_the_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="'num_fewshot': BBH has 3 few-shot examples for navigate, asked for 4"):
        BenchmarkTask(benchmark_spec("BBH", ["navigate"], num_fewshot=4)).dataset_sha256()
    with pytest.raises(ValueError, match="'num_fewshot': PIQA has 0 few-shot examples, asked for 1"):
        BenchmarkTask(benchmark_spec("PIQA", num_fewshot=1)).dataset_sha256()


def test_base_versus_candidate_comparison_end_to_end(tmp_path: Path) -> None:
    def candidate(path: str, body: dict) -> str:
        return "B"

    def base(path: str, body: dict) -> str:
        return "A"

    with serve(candidate) as cand_server, serve(base) as base_server:
        spec = EvaluationSpec(
            eval_type="benchmark",
            model=f"openai:{cand_server.base_url}?model=c&api=chat&logprobs=none",
            base_model=f"openai:{base_server.base_url}?model=b&api=chat&logprobs=none",
            evaluate_base_model=True,
            benchmark="BoolQ",
            hyperparameters={"limit": 40, "seed": 11},
        ).validate()
        report = evaluate_in_process(spec, str(tmp_path / "out"))
    task = BenchmarkTask(spec)
    yes = sum(it.data["gold"] for it in task.items())  # "B" is "yes", "A" is "no"
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    # BoolQ's primary metric is acc: the headline adds it as "accuracy" and on 0-100 as "score".
    assert comparison["fine_tuned"] == {"acc": yes / 40, "accuracy": yes / 40, "score": yes / 40 * 100}
    assert comparison["base"] == {"acc": (40 - yes) / 40, "accuracy": (40 - yes) / 40, "score": (40 - yes) / 40 * 100}
    assert comparison["improvement"] == yes / 40 - (40 - yes) / 40
    assert comparison["improvements"]["acc"] == yes / 40 - (40 - yes) / 40
    test = comparison["significance"]["acc"]
    assert test["test"] == "mcnemar_exact"
    assert (test["candidate_only_correct"], test["base_only_correct"]) == (yes, 40 - yes)
    from scipy.stats import binomtest

    assert test["p_value"] == binomtest(yes, 40, 0.5).pvalue
    assert report.summary()["improvement"] == comparison["improvements"]


@pytest.mark.full_data
@pytest.mark.parametrize("benchmark", [b for b in Benchmark if b is not Benchmark.HELLASWAG])
def test_full_item_counts_match_the_catalog(benchmark: Benchmark) -> None:
    info = BENCHMARKS[benchmark]
    items = BenchmarkTask(benchmark_spec(benchmark.value)).items()
    assert len(items) == info.num_samples
    assert len({it.id for it in items}) == len(items)
    for subtask, size in info.subtask_sizes.items():
        assert sum(1 for it in items if it.subtask == subtask) == size
