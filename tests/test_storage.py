"""evalstack.storage: atomic local writes, the local object folder, and real S3 calls against moto."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from evalstack import storage
from evalstack.evaluate import CustomScorerEvaluator
from tests.conftest import EXAMPLES


def test_local_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "results.json"
    storage.write_text(str(target), "old")
    storage.write_text(str(target), "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    storage.write_text(str(target), "complete")

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        storage.write_text(str(target), "torn")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_uri_forms_map_to_the_same_local_file(tmp_path: Path, isolated_environment: Path) -> None:
    assert storage.local_path(f"file://{tmp_path}/x.json") == tmp_path / "x.json"
    assert storage.local_path("s3://bucket/k/x.json") == isolated_environment / "s3" / "bucket" / "k" / "x.json"
    assert storage.join("s3://bkt/prefix/", "/run/", "results.json") == "s3://bkt/prefix/run/results.json"
    assert not storage.s3_uses_aws()


def test_s3_round_trip_against_moto(aws: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="evalstack-storage")
    assert storage.s3_uses_aws()
    storage.write_text("s3://evalstack-storage/run/a.json", '{"a": 1}')
    storage.write_bytes("s3://evalstack-storage/run/sub/b.bin", b"\x00\x01")
    assert storage.read_text("s3://evalstack-storage/run/a.json") == '{"a": 1}'
    assert storage.size("s3://evalstack-storage/run/sub/b.bin") == 2
    assert storage.exists("s3://evalstack-storage/run/a.json")
    assert not storage.exists("s3://evalstack-storage/run/missing.json")
    assert storage.list_uris("s3://evalstack-storage/run/") == [
        "s3://evalstack-storage/run/a.json",
        "s3://evalstack-storage/run/sub/b.bin",
    ]
    with storage.open_text("s3://evalstack-storage/run/a.json") as handle:
        assert json.load(handle) == {"a": 1}


def test_evaluation_writes_results_to_s3(aws: str) -> None:
    boto3.client("s3").create_bucket(Bucket="evalstack-results")
    execution = CustomScorerEvaluator(
        evaluator="meteor",
        dataset=str(EXAMPLES / "truthfulqa_answers.jsonl"),
        model="m",
        s3_output_path="s3://evalstack-results/evals",
    ).evaluate()
    execution.wait()
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="evalstack-results")["Contents"])
    prefix = execution.s3_output_path.removeprefix("s3://evalstack-results/")
    # Top-level result files; the pipeline also keeps its inputs one level up and step records below.
    keys = [k for k in keys if k.startswith(f"{prefix}/") and "/" not in k.removeprefix(f"{prefix}/")]
    names = {k.removeprefix(f"{prefix}/") for k in keys}
    assert {"report.md", "results.json", "samples.jsonl", "spec.json"} <= names
    assert execution.results()["metrics"]["meteor"] > 0
