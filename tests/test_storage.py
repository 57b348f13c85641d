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


def _uploaded(source: Path, target: Path) -> tuple[bool, os.stat_result]:
    """Whether the upload of ``source`` to ``target`` shared its inode, and the target's stat once the
    source (the step's scratch file) is gone."""
    source.write_bytes(b"line\n" * 1000)
    storage.upload_file(source, str(target))
    shared = source.stat().st_ino == target.stat().st_ino and source.stat().st_dev == target.stat().st_dev
    source.unlink()
    assert target.read_bytes() == b"line\n" * 1000
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left
    return shared, target.stat()


def test_a_local_upload_on_one_file_system_is_a_private_hard_link(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    linked, stat = _uploaded(tmp_path / "scratch" / "samples.jsonl", tmp_path / "out" / "samples.jsonl")
    assert linked
    assert stat.st_mode & 0o777 == 0o600  # as every other output (mkstemp's mode)


def test_a_local_upload_across_file_systems_is_a_copy(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.fail("this test needs /dev/shm on a file system of its own, as Linux machines and CI have it")
    folder = shm / f"evalstack-test-{os.getpid()}"
    folder.mkdir()
    try:
        linked, stat = _uploaded(folder / "samples.jsonl", tmp_path / "out" / "samples.jsonl")
    finally:
        folder.rmdir()
    assert not linked
    assert stat.st_mode & 0o777 == 0o600


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


def test_s3_outputs_are_write_once_against_moto(aws: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="evalstack-write-once")
    uri = "s3://evalstack-write-once/exec-b/results.json"
    storage.write_text(uri, '{"accuracy": 0.5}')
    # A step retry that writes the same bytes is fine.
    storage.write_text(uri, '{"accuracy": 0.5}')
    with pytest.raises(storage.WriteOnceError, match=r"exec-b/results\.json: already exists with other content"):
        storage.write_text(uri, '{"accuracy": 1.0}')
    with pytest.raises(storage.WriteOnceError, match="write-once"):
        storage.write_text(uri, '{"accuracy": 0.5} ')  # same prefix, one byte longer
    assert storage.read_text(uri) == '{"accuracy": 0.5}'
    versions = s3.list_object_versions(Bucket="evalstack-write-once", Prefix="exec-b/").get("Versions", [])
    assert len(versions) == 1
    # Files rewritten by design (progress) opt out.
    storage.write_text(uri, '{"accuracy": 1.0}', replace=True)
    assert storage.read_text(uri) == '{"accuracy": 1.0}'


def test_s3_uploads_are_write_once_in_one_put_and_in_parts(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="evalstack-write-once-files")
    # S3's smallest part is 5 MiB: a file of two parts goes through the multipart path.
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 1024)
    monkeypatch.setattr(storage, "MULTIPART_PART_SIZE", 5 * 1024 * 1024)
    small, large, other = tmp_path / "small.jsonl", tmp_path / "large.jsonl", tmp_path / "other.jsonl"
    small.write_bytes(b'{"id": 1}\n')
    large.write_bytes(os.urandom(5 * 1024 * 1024 + 4096))
    other.write_bytes(large.read_bytes()[:-1] + b"x")
    for path in (small, large):
        uri = f"s3://evalstack-write-once-files/exec/{path.name}"
        storage.upload_file(path, uri)
        storage.upload_file(path, uri)  # an identical retry
        assert storage.read_bytes(uri) == path.read_bytes()
    large_uri = "s3://evalstack-write-once-files/exec/large.jsonl"
    with pytest.raises(storage.WriteOnceError, match=r"exec/large\.jsonl: already exists"):
        storage.upload_file(other, large_uri)
    with pytest.raises(storage.WriteOnceError):
        storage.upload_file(small, large_uri)
    assert storage.read_bytes(large_uri) == large.read_bytes()
    # The refused multipart upload was aborted, not left behind.
    assert s3.list_multipart_uploads(Bucket="evalstack-write-once-files").get("Uploads", []) == []
    storage.upload_file(other, large_uri, replace=True)
    assert storage.read_bytes(large_uri) == other.read_bytes()


def test_local_writes_still_replace(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    storage.write_text(str(target), "first")
    storage.write_text(str(target), "second")
    source = tmp_path / "source.jsonl"
    source.write_text("third")
    storage.upload_file(source, str(target))
    assert target.read_text() == "third"
