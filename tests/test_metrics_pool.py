"""Per-sample CPU metrics over a process pool: the same values in the same order as in-process, small
chunks and a cap of 1 stay in-process, and a step forked from the warm parent uses and stops its pool."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalstack.metrics import PresetScorer
from evalstack.metrics.pool import WORKERS_ENV, SamplePool, step_pool, worker_count
from evalstack.pipeline.local.warm import WarmProcess
from evalstack.spec import DatasetSpec, EvaluationSpec

WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree", "quickly", "slowly", "red", "blue")


def _rows(n: int, seed: int = 7) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))

    predictions = [text() for _ in range(n)]
    # One or two references per sample, so padding of reference streams is exercised too.
    references = [[text() for _ in range(1 + i % 2)] for i in range(n)]
    return predictions, references


@pytest.fixture(scope="module")
def pool() -> Iterator[SamplePool]:
    shared = SamplePool(2, min_samples_per_worker=50)
    yield shared
    shared.shutdown()


def _run(metric: str, predictions: list[str], references: list[list[str]], pool: SamplePool | None):
    scorer = PresetScorer(metric, None, pool)
    per_sample = scorer.score(predictions, references)
    scorer.add(predictions, references, per_sample or [])
    return per_sample, scorer.result(), scorer.stderr()


@pytest.mark.parametrize("metric", ["rouge", "meteor", "bleu"])
def test_pooled_scores_equal_in_process_scores(metric: str, pool: SamplePool) -> None:
    predictions, references = _rows(301)  # an odd count: slices of unequal size
    assert pool.pooled(len(predictions))
    pooled = _run(metric, predictions, references, pool)
    assert pool.started
    in_process = _run(metric, predictions, references, None)
    assert pooled[0] == in_process[0]  # the same floats, sample by sample, in order
    assert pooled[1] == in_process[1]
    assert pooled[2] == in_process[2]
    assert len(set(json.dumps(s) for s in pooled[0])) > 20  # the rows really differ


def test_small_chunk_is_scored_without_starting_a_pool() -> None:
    small = SamplePool(2)
    predictions, references = _rows(40)
    assert not small.pooled(len(predictions))
    assert _run("rouge", predictions, references, small)[0] == _run("rouge", predictions, references, None)[0]
    assert not small.started


def test_a_cap_of_one_scores_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert worker_count() == 1
    single = SamplePool(worker_count(), min_samples_per_worker=1)
    predictions, references = _rows(200)
    assert _run("bleu", predictions, references, single)[0] == _run("bleu", predictions, references, None)[0]
    assert not single.started


def test_worker_count_defaults_to_the_cores_and_rejects_bad_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert worker_count() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(ValueError, match=f"{WORKERS_ENV}: 'many'"):
        worker_count()
    monkeypatch.setenv(WORKERS_ENV, "0")
    with pytest.raises(ValueError, match="at least 1"):
        worker_count()


def test_accuracy_is_never_sent_to_the_pool(pool: SamplePool) -> None:
    assert PresetScorer("accuracy", None, pool).pool is None
    assert PresetScorer("rouge", None, pool).pool is pool


def test_step_pool_is_one_per_process() -> None:
    assert step_pool() is step_pool()


def test_step_forked_from_the_warm_parent_scores_with_a_pool_and_stops_it(tmp_path: Path) -> None:
    predictions, references = _rows(600)
    pairs = zip(predictions, references, strict=True)
    rows = [{"prompt": f"q{i}", "response": p, "reference": r[0]} for i, (p, r) in enumerate(pairs)]
    dataset = tmp_path / "data.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = EvaluationSpec(
        eval_type="custom_scorer",
        model="openai:http://127.0.0.1:9/v1?model=unused",
        dataset=DatasetSpec(str(dataset)),
        metrics=["rouge"],
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.to_json())
    root = tmp_path / "algo-1"
    root.mkdir()
    env = {**os.environ, "EVALSTACK_OPT_ML_ROOT": str(root), "PYTHONUNBUFFERED": "1", WORKERS_ENV: "2"}
    arguments = ["evaluate", "--eval-type", "custom_scorer", "--role", "candidate", "--spec-uri", str(spec_file),
                 "--output-uri", str(tmp_path / "out")]  # fmt: skip
    proc = WarmProcess(arguments, env, root, root / "output.log")
    assert proc.wait() == 0, (root / "output.log").read_text()
    assert "with 2 worker processes" in (root / "output.log").read_text()
    # The step ran in its own session: no worker of its pool outlives it.
    sessions = subprocess.run(["ps", "-eo", "sid="], capture_output=True, text=True, check=True).stdout.split()
    assert str(proc.pid) not in sessions
    (records_file,) = [p for p in (tmp_path / "out").rglob("*.jsonl") if "records" in str(p)]
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    expected = PresetScorer("rouge").score([r["response"] for r in rows], [r["reference"] for r in rows])
    assert [r["scores"] for r in records] == expected
