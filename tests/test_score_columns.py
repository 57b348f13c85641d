"""The Report step from the shards' score columns (evalstack.engine.score_columns): the same files and
digest as the Report step that parses every record, with no record parsed; bad columns files are named.
Corpus metrics (F1, BLEU) from the corpus states in the same files: tests/test_corpus_states.py."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest

from evalstack.engine import run as run_module
from evalstack.engine.run import Report, report, run_shard, score_columns_uri
from evalstack.spec import DatasetSpec, EvaluationSpec

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "bird", "sang", "naïve", 'qu"ote', "tab\t"]
FILES = ("samples.jsonl", "results.json", "report.md")


def _dataset(path: Path, rows: int) -> Path:
    rng = random.Random(rows)
    lines = []
    for i in range(rows):
        reference = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        response = reference if i % 3 == 0 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        lines.append(json.dumps({"prompt": f"item {i}", "response": response, "reference": reference, "topic": i % 4}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _spec(dataset: Path, metrics: list[str]) -> EvaluationSpec:
    return EvaluationSpec(
        eval_type="custom_scorer",
        model="openai:http://127.0.0.1:9/v1?model=unused",
        dataset=DatasetSpec(str(dataset)),
        metrics=metrics,
    )


def _digest_rows(out: Report) -> tuple:
    digest = out.digest
    assert digest is not None
    lists = tuple([dataclasses.astuple(s) for s in getattr(digest, name)] for name in ("most_wrong", "regressed"))
    return lists, digest.score_counts, digest.samples


def _no_record_parsed(*_args: object) -> None:
    raise AssertionError("a record was parsed in the merge")


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("metrics", [["accuracy"], ["rouge", "accuracy"], ["meteor"]])
def test_report_from_score_columns_equals_report_from_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards: int, metrics: list[str]
) -> None:
    spec = _spec(_dataset(tmp_path / "data.jsonl", 40), metrics)
    records = tmp_path / "records"
    for index in range(shards):
        run_shard(spec, "candidate", index, shards, str(records))
        assert Path(score_columns_uri(str(records), "candidate", index, shards)).is_file()
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_parsed_block", _no_record_parsed)
        from_columns = report(spec, str(tmp_path / "columns"), records_uri=str(records))
    shutil.rmtree(records / "scores")
    assert run_module.verified_scores(str(records), "candidate") is None
    from_records = report(spec, str(tmp_path / "records-out"), records_uri=str(records))

    for name in FILES:
        assert (tmp_path / "columns" / name).read_bytes() == (tmp_path / "records-out" / name).read_bytes(), name
    assert _digest_rows(from_columns) == _digest_rows(from_records)
    assert from_columns.candidate.num_samples == 40 and from_columns.digest.most_wrong  # type: ignore[union-attr]
    listed = from_columns.digest.most_wrong[0]  # type: ignore[union-attr]
    sample = json.loads((tmp_path / "columns" / "samples.jsonl").read_text().splitlines()[listed.line - 1])
    assert listed.id == sample["id"] and listed.answer == sample["response"]  # parsed when listed


def test_a_shard_without_items_writes_no_columns_and_the_report_reads_the_records(tmp_path: Path) -> None:
    # More instances than items: shards 12 to 14 of 15 are given none, so they know no score keys.
    spec = _spec(_dataset(tmp_path / "data.jsonl", 12), ["accuracy"])
    for index in range(15):
        run_shard(spec, "candidate", index, 15, str(tmp_path / "records"))
    written = [Path(score_columns_uri(str(tmp_path / "records"), "candidate", i, 15)).is_file() for i in range(15)]
    assert written == [True] * 12 + [False] * 3
    run_shard(spec, "candidate", 0, 1, str(tmp_path / "one"))
    sharded = report(spec, str(tmp_path / "sharded"), records_uri=str(tmp_path / "records"))
    whole = report(spec, str(tmp_path / "whole"), records_uri=str(tmp_path / "one"))
    assert sharded.candidate.metrics == whole.candidate.metrics
    assert (tmp_path / "sharded" / "samples.jsonl").read_bytes() == (tmp_path / "whole" / "samples.jsonl").read_bytes()


def test_a_damaged_score_columns_file_is_named(tmp_path: Path) -> None:
    spec = _spec(_dataset(tmp_path / "data.jsonl", 30), ["accuracy"])
    records = str(tmp_path / "records")
    for index in range(2):
        run_shard(spec, "candidate", index, 2, records)
    columns = Path(score_columns_uri(records, "candidate", 1, 2))
    whole = columns.read_bytes()
    columns.write_bytes(whole[:-8])
    with pytest.raises(RuntimeError, match=r"scores/candidate/shard-00001-of-00002\.bin: ends within the scores"):
        report(spec, str(tmp_path / "a"), records_uri=records)
    columns.write_bytes(whole + whole[whole.index(b"\n") + 1 :])
    with pytest.raises(RuntimeError, match=r"shard-00001-of-00002\.bin: holds scores beyond its 15 items"):
        report(spec, str(tmp_path / "b"), records_uri=records)
    columns.write_bytes(b"not json\n" + whole)
    with pytest.raises(RuntimeError, match=r"shard-00001-of-00002\.bin: not a score columns file"):
        report(spec, str(tmp_path / "c"), records_uri=records)
    header, body = whole.split(b"\n", 1)
    columns.write_bytes(json.dumps({**json.loads(header), "keys": ["rouge1"]}).encode() + b"\n" + body)
    with pytest.raises(RuntimeError, match=r"shard-00001-of-00002\.bin: scores \['rouge1'\] of 15 items, but"):
        report(spec, str(tmp_path / "d"), records_uri=records)
    assert not any((tmp_path / name).exists() for name in "abcd")
