"""s3:// datasets: against moto in server mode on loopback, and against the local object folder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from evalstack.data import DatasetError, DatasetReader, iter_records, scan_dataset
from evalstack.spec import ColumnMapping, DatasetSpec
from tests.support.aws import moto_server
from tests.test_data_readers import (
    QA_MAPPING,
    TRUTHFULQA,
    truthfulqa_rows,
    write_csv,
    write_jsonl,
    write_parquet,
)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server of this module's own, so its resources never meet another module's."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[object, str]:
    """A boto3 client on moto and a fresh bucket; storage.py picks the endpoint up from the environment."""
    for name in ("EVALSTACK_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    bucket = request.node.name.lower().replace("_", "-")[:50]
    client.create_bucket(Bucket=bucket)
    return client, bucket


def _upload(s3: tuple[object, str], path: Path, key: str) -> str:
    client, bucket = s3
    client.upload_file(str(path), bucket, key)  # type: ignore[attr-defined]
    return f"s3://{bucket}/{key}"


def test_s3_three_formats_match_local(s3: tuple[object, str], tmp_path: Path) -> None:
    rows = truthfulqa_rows()
    files = [
        write_jsonl(tmp_path / "qa.jsonl", rows),
        write_csv(tmp_path / "qa.csv", rows),
        write_parquet(tmp_path / "qa.parquet", rows, row_group_size=9),  # the S3 body is spooled, not seekable
    ]
    for path in files:
        uri = _upload(s3, path, f"datasets/{path.name}")
        local = list(iter_records(DatasetSpec(str(path), columns=QA_MAPPING)))
        reader = DatasetReader(DatasetSpec(uri, columns=QA_MAPPING))
        assert list(reader) == local
        assert reader.summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (reader.summary.uri, reader.summary.size_bytes) == (uri, path.stat().st_size)


def test_s3_original_truthfulqa(s3: tuple[object, str]) -> None:
    uri = _upload(s3, TRUTHFULQA, "TruthfulQA.csv")
    summary = scan_dataset(DatasetSpec(uri, columns=ColumnMapping(prompt="Question", reference="Best Answer")))
    expected = (len(truthfulqa_rows(n=10_000)), hashlib.sha256(TRUTHFULQA.read_bytes()).hexdigest(), False)
    assert (summary.count, summary.sha256, summary.has_responses) == expected


def test_s3_limit_still_hashes_whole_object(s3: tuple[object, str]) -> None:
    uri = _upload(s3, TRUTHFULQA, "TruthfulQA.csv")
    reader = DatasetReader(DatasetSpec(uri, columns=ColumnMapping(prompt="Question")), limit=15)
    assert [r.line for r in reader] == list(range(2, 17))
    assert reader.summary.sha256 == hashlib.sha256(TRUTHFULQA.read_bytes()).hexdigest()


def test_s3_errors_name_the_s3_uri(s3: tuple[object, str], tmp_path: Path) -> None:
    bucket = s3[1]
    with pytest.raises(DatasetError, match=rf"^s3://{bucket}/nope\.jsonl: file not found$"):
        scan_dataset(DatasetSpec(f"s3://{bucket}/nope.jsonl"))
    with pytest.raises(DatasetError, match=r"^s3://no-such-bucket-evalstack/k\.jsonl: file not found$"):
        scan_dataset(DatasetSpec("s3://no-such-bucket-evalstack/k.jsonl"))
    rows = [{"prompt": f"q{i}"} for i in range(12)]
    rows[6] = {"context": "no prompt here"}
    uri = _upload(s3, write_jsonl(tmp_path / "k.jsonl", rows), "k.jsonl")
    with pytest.raises(DatasetError) as caught:
        list(iter_records(DatasetSpec(uri)))
    assert str(caught.value) == (
        f"s3://{bucket}/k.jsonl: line 7: field 'prompt': missing; a record needs a prompt (or a 'response' to score)"
    )


def test_local_object_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVALSTACK_S3", "local")
    monkeypatch.setenv("EVALSTACK_HOME", str(tmp_path))
    folder = tmp_path / "s3" / "my-bucket" / "eval"
    folder.mkdir(parents=True)
    rows = truthfulqa_rows()
    path = write_jsonl(folder / "data.jsonl", rows)
    reader = DatasetReader(DatasetSpec("s3://my-bucket/eval/data.jsonl", columns=QA_MAPPING))
    assert [r.prompt for r in reader] == [row["Question"] for row in rows]
    assert reader.summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match=r"^s3://my-bucket/eval/other\.csv: file not found$"):
        scan_dataset(DatasetSpec("s3://my-bucket/eval/other.csv"))
