"""Storage entry points accept only s3://bucket/key and local paths, and never write outside where
they were pointed: traversal and scheme cases for every entry point (storage functions, the output
path of each evaluator, the dataset path, the local S3 emulation, join)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from evalstack import storage
from evalstack.evaluate import BenchMarkEvaluator, CustomScorerEvaluator, LLMAsJudgeEvaluator
from evalstack.runtime.launch import start_evaluation
from evalstack.spec import DatasetSpec, EvaluationSpec
from tests.conftest import EXAMPLES

ACCEPTED = "use s3://bucket/key"

BAD_SCHEMES = [
    "http://example.com/out",
    "https://example.com/out",
    "ftp://example.com/out",
    "hdfs://namenode/out",
    "S3://bucket/out",  # schemes are case-sensitive here: S3 is not s3
    "s3:/bucket/out",
    "s3:bucket/out",
    "file:relative/out",
    "file://evil.example.com/etc/out",
    "c:out",
]
BAD_S3 = [
    "s3://../x",
    "s3://b/../../x",  # a one-letter bucket is not a bucket either
    "s3://bucket/../../x",
    "s3://bucket/a/../../x",
    "s3://bucket/a/..",
    "s3://bucket/./x",
    "s3://bucket/a//b",
    "s3://bucket//x",
    "s3://..",
    "s3://",
    "s3:///key",
    "s3://Bucket/x",
    "s3://bu_cket/x",
    "s3://bucket..name/x",
    "s3://-bucket/x",
    "s3://bucket-/x",
    "s3://192.168.1.10/x",
    "s3://xn--bucket/x",
    "s3://bucket-s3alias/x",
    "s3://" + "a" * 64 + "/x",
    "s3://bucket/a\x00b",
    "s3://bucket/a\nb",
]
BAD = BAD_SCHEMES + BAD_S3


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory, where a scheme mistaken for a folder (./http:/...) would land."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/key.json",
        "s3://my.bucket-1/a/b/",
        "s3://bucket",
        "s3://bucket/",
        "s3://bucket/dir.v2/k?x#y",  # '?' and '#' are key characters, not a query
        "file:///tmp/x.json",
        "file://localhost/tmp/x.json",
        "/tmp/x.json",
        "relative/x.json",
        "../sibling/x.json",  # a local path is the user's own file system
        "./http:/odd-but-explicit",
    ],
)
def test_accepted_forms_parse(uri: str) -> None:
    loc = storage.parse_uri(uri)
    if uri.startswith("s3://"):
        assert isinstance(loc, storage.S3Location)
        assert f"s3://{loc.bucket}/{loc.key}".rstrip("/") == uri.rstrip("/")
    else:
        assert isinstance(loc, Path)


@pytest.mark.parametrize("uri", BAD)
def test_rejected_forms_name_the_accepted_ones(uri: str) -> None:
    with pytest.raises(storage.UriError) as err:
        storage.parse_uri(uri, "s3_output_path")
    message = str(err.value)
    assert message.startswith("s3_output_path: unsupported location")
    assert ACCEPTED in message and "local path (plain or file:///absolute/path)" in message
    assert "\n" not in message.replace(repr(uri), "")


STORAGE_ENTRY_POINTS: dict[str, Callable[[str], object]] = {
    "write_text": lambda uri: storage.write_text(uri, "data"),
    "write_bytes": lambda uri: storage.write_bytes(uri, b"data"),
    "read_text": storage.read_text,
    "read_bytes": storage.read_bytes,
    "exists": storage.exists,
    "size": storage.size,
    "list_uris": storage.list_uris,
    "local_path": storage.local_path,
    "absolute": storage.absolute,
    "delete": storage.delete,
    "join": lambda uri: storage.join(uri, "results.json"),
    "open_text": lambda uri: storage.open_text(uri).__enter__(),
}


@pytest.mark.parametrize("entry", sorted(STORAGE_ENTRY_POINTS))
def test_every_storage_entry_point_rejects_bad_locations(entry: str, workdir: Path, isolated_environment: Path) -> None:
    for uri in BAD:
        with pytest.raises(storage.UriError, match="unsupported location"):
            STORAGE_ENTRY_POINTS[entry](uri)
    assert _files_under(workdir) == []
    assert _files_under(isolated_environment.parent) == []


def test_upload_file_rejects_bad_targets(tmp_path: Path, workdir: Path, isolated_environment: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("payload")
    for uri in BAD:
        with pytest.raises(storage.UriError):
            storage.upload_file(source, uri)
    assert _files_under(workdir) == []
    assert not isolated_environment.exists()


@pytest.mark.parametrize(
    ("base", "part"),
    [
        ("s3://bucket/prefix", "../x"),
        ("s3://bucket/prefix", "a/../../x"),
        ("s3://bucket/prefix", "./x"),
        ("s3://bucket/prefix", ".."),
        ("/tmp/out", "../escape.json"),
        ("file:///tmp/out", "run/../../escape.json"),
    ],
)
def test_join_refuses_to_climb(base: str, part: str) -> None:
    with pytest.raises(storage.UriError, match=r"may not contain '\.' or '\.\.'"):
        storage.join(base, part)


def test_join_rejects_a_bad_base() -> None:
    with pytest.raises(storage.UriError, match="unsupported location"):
        storage.join("http://example.com", "out")
    assert storage.join("s3://bucket/p/", "/run/", "a/b.json") == "s3://bucket/p/run/a/b.json"


def test_local_s3_emulation_stays_under_its_root(tmp_path: Path, isolated_environment: Path) -> None:
    storage.write_text("s3://bucket/ok/a.json", "inside")
    root = isolated_environment / "s3"
    assert (root / "bucket" / "ok" / "a.json").read_text() == "inside"
    # A symlink planted inside the object folder must not lead a write out of it.
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "bucket" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(storage.UriError, match="resolves outside the local object folder"):
        storage.write_text("s3://bucket/link/escaped.json", "x")
    with pytest.raises(storage.UriError, match="resolves outside the local object folder"):
        storage.read_text("s3://bucket/link/escaped.json")
    assert list(outside.iterdir()) == []
    # A bucket that is itself a symlink out of the root is refused too.
    (root / "other-bucket").symlink_to(outside, target_is_directory=True)
    with pytest.raises(storage.UriError, match="resolves outside"):
        storage.write_bytes("s3://other-bucket/k", b"x")
    assert list(outside.iterdir()) == []


def test_relative_evalstack_home_is_pinned_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALSTACK_HOME", "rel-home-pinned")
    home = storage.evalstack_home()
    assert home == tmp_path / "rel-home-pinned"
    # A later chdir (a step process in its scratch folder) does not move it.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert storage.evalstack_home() == home
    assert storage.local_path("s3://bucket/k") == home / "s3" / "bucket" / "k"


def _evaluators(output: str) -> dict[str, Callable[[], object]]:
    dataset = str(EXAMPLES / "truthfulqa_answers.jsonl")
    return {
        "benchmark": lambda: BenchMarkEvaluator(
            "gsm8k", model="openai:http://127.0.0.1:9/v1?model=m", s3_output_path=output
        ),
        "custom_scorer": lambda: CustomScorerEvaluator(
            evaluator="accuracy", dataset=dataset, model="m", s3_output_path=output
        ),
        "llm_as_judge": lambda: LLMAsJudgeEvaluator(
            evaluator_model="bedrock:anthropic.claude-3-haiku-20240307-v1:0",
            dataset=dataset,
            builtin_metrics=["Correctness"],
            model="m",
            s3_output_path=output,
        ),
    }


@pytest.mark.parametrize("kind", ["benchmark", "custom_scorer", "llm_as_judge"])
@pytest.mark.parametrize(
    "output", ["http://example.com/out", "s3:/bucket/out", "s3://b/../../x", "s3://../x", "s3://bucket/a/../../x"]
)
def test_every_evaluator_rejects_a_bad_output_path(
    kind: str, output: str, workdir: Path, isolated_environment: Path
) -> None:
    with pytest.raises(ValueError, match="unsupported location") as err:
        _evaluators(output)[kind]()
    assert ACCEPTED in str(err.value)
    assert _files_under(workdir) == []
    assert not isolated_environment.exists()


@pytest.mark.parametrize(
    "dataset", ["http://example.com/d.jsonl", "s3:/bucket/d.jsonl", "s3://bucket/../d.jsonl", "s3://../d.jsonl"]
)
def test_dataset_path_is_checked(dataset: str, workdir: Path, isolated_environment: Path) -> None:
    with pytest.raises(ValueError, match="unsupported location"):
        CustomScorerEvaluator(evaluator="accuracy", dataset=dataset, model="m")
    assert _files_under(workdir) == []
    assert not isolated_environment.exists()


@pytest.mark.parametrize("output", ["http://example.com/out", "s3://bucket/a/../../x"])
def test_start_evaluation_checks_its_output_path(output: str, workdir: Path, isolated_environment: Path) -> None:
    spec = EvaluationSpec(
        eval_type="custom_scorer",
        name="direct",
        model="m",
        dataset=DatasetSpec(uri=str(EXAMPLES / "truthfulqa_answers.jsonl")),
        metrics=["accuracy"],
    ).validate()
    with pytest.raises(ValueError, match=r"^s3_output_path: unsupported location"):
        start_evaluation(spec, s3_output_path=output)
    assert _files_under(workdir) == []
    assert not (isolated_environment / "results").exists()


def test_nothing_is_written_to_the_working_directory_by_a_rejected_scheme(workdir: Path) -> None:
    """The original bug: http://example.com/out became ./http:/example.com/out."""
    with pytest.raises(storage.UriError):
        storage.write_text("http://example.com/out/results.json", "{}")
    assert not os.path.exists(workdir / "http:")
