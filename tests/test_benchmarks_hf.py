"""The HF datasets path offline: pinned revisions, a local hub mirror read through ``datasets``, and
``evalstack data fetch`` writing the original files from that mirror (or failing clearly offline).

The mirror is laid out as ``huggingface_hub.snapshot_download(repo_id, repo_type="dataset",
revision=<sha>, local_dir=<mirror>/<repo_id>)`` leaves it: the repository's parquet files and
README ``configs``, plus ``.cache/huggingface/download/<file>.metadata`` written by huggingface_hub's
own ``write_download_metadata``. Its rows are the shared original files converted to the hub schema
(ARC: ``id, question, choices{text,label}, answerKey``; GSM8K: ``question, answer``), so the HF
adapter must give exactly the docs the original-file adapter gives for the same questions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import _local_folder as local_folder

from evalstack.benchmarks.definitions import DEFINITIONS
from evalstack.benchmarks.definitions.arc import Arc
from evalstack.benchmarks.definitions.gsm8k import Gsm8k
from evalstack.benchmarks.definitions.hendrycks_math import subject_key
from evalstack.benchmarks.fetch import FetchError, fetch
from evalstack.benchmarks.hf import PINNED_REVISIONS, hf_table
from evalstack.benchmarks.source import HF_MIRROR_ENV, FileSource, HfDataset, HfSource, open_source
from evalstack.benchmarks.task import BenchmarkTask
from evalstack.catalog.benchmarks import Benchmark, resolve_benchmark
from evalstack.cli.main import main
from tests.conftest import BENCHMARK_DATA, FIXTURE_DATA
from tests.support.scripted_benchmarks import benchmark_spec

ARC_SHA = PINNED_REVISIONS["allenai/ai2_arc"]
GSM8K_SHA = PINNED_REVISIONS["openai/gsm8k"]
ROWS = 7


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No hub, and a private datasets cache (datasets reads these at import time, so set them directly).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def _lines(relpath: str) -> list[str]:
    return [line for line in (BENCHMARK_DATA / relpath).read_text(encoding="utf-8").splitlines() if line.strip()]


def _jsonl(relpath: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(relpath)]


def _hub_repo(mirror: Path, repo_id: str, sha: str, configs: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Write ``repo_id`` into the mirror: one parquet file per (config, split) and the README configs."""
    folder = mirror / repo_id
    readme = ["---", "configs:"]
    for config, splits in configs.items():
        readme += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            filename = f"{config}/{split}-00000-of-00001.parquet"
            (folder / config).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), folder / filename)
            local_folder.write_download_metadata(folder, filename, sha, etag=f"etag-{split}")
            readme += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (folder / "README.md").write_text("\n".join([*readme, "---", ""]), encoding="utf-8")
    local_folder.write_download_metadata(folder, "README.md", sha, etag="etag-readme")


def _arc_hub_row(row: dict[str, Any]) -> dict[str, Any]:
    choices = row["question"]["choices"]
    return {
        "id": row["id"],
        "question": row["question"]["stem"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": row["answerKey"],
    }


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "hf-mirror"
    arc = {
        folder: {"test": [_arc_hub_row(r) for r in _jsonl(f"arc/{folder}/{folder}-Test.jsonl")[:ROWS]]}
        for folder in ("ARC-Easy", "ARC-Challenge")
    }
    _hub_repo(root, "allenai/ai2_arc", ARC_SHA, arc)
    gsm8k = {split: _jsonl(f"gsm8k/{split}.jsonl")[:ROWS] for split in ("train", "test")}
    _hub_repo(root, "openai/gsm8k", GSM8K_SHA, {"main": gsm8k})
    return root


def test_arc_hf_rows_give_the_docs_of_the_original_file(mirror: Path) -> None:
    hf_docs = Arc().docs(HfSource(str(mirror)), "easy")
    file_docs = Arc().docs(FileSource(str(BENCHMARK_DATA)), "easy")[:ROWS]
    assert hf_docs == file_docs
    assert hf_docs[0][0] == _jsonl("arc/ARC-Easy/ARC-Easy-Test.jsonl")[0]["id"]


def test_gsm8k_hf_rows_and_fewshot_pool_match_the_original_files(mirror: Path) -> None:
    source = HfSource(str(mirror))
    gsm8k = Gsm8k()
    files = FileSource(str(BENCHMARK_DATA))
    assert gsm8k.docs(source, None) == gsm8k.docs(files, None)[:ROWS]
    assert gsm8k.fewshot_pool(source, None) == gsm8k.fewshot_pool(files, None)[:ROWS]
    # The dataset hash covers the identity of each table read, revision included, in sorted order.
    identity = "".join(f"openai/gsm8k\0main\0{split}\0{GSM8K_SHA}\n" for split in ("test", "train"))
    assert source.sha256() == hashlib.sha256(identity.encode()).hexdigest()


def test_open_source_hf_reads_the_mirror_named_by_the_environment(
    mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", "hf")
    monkeypatch.setenv(HF_MIRROR_ENV, str(mirror))
    source = open_source()
    assert isinstance(source, HfSource) and source.mirror == str(mirror)
    assert len(Arc().docs(source, "easy")) == ROWS


def test_hf_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALSTACK_BENCHMARK_DATA")
    monkeypatch.delenv(HF_MIRROR_ENV, raising=False)
    source = open_source()
    assert isinstance(source, HfSource) and source.description == "hf"


def test_a_mirror_downloaded_at_another_revision_is_refused(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "0" * 40
    monkeypatch.setenv("EVALSTACK_HF_REVISION_ARC", other)
    with pytest.raises(ValueError, match=f"downloaded at commit '{ARC_SHA}', pinned '{other}'"):
        Arc().docs(HfSource(str(mirror)), "easy")


def test_a_mirror_without_download_metadata_is_refused(tmp_path: Path) -> None:
    (tmp_path / "allenai" / "ai2_arc").mkdir(parents=True)
    with pytest.raises(ValueError, match="no huggingface_hub download metadata"):
        Arc().docs(HfSource(str(tmp_path)), "easy")
    with pytest.raises(FileNotFoundError, match="no folder"):
        Gsm8k().docs(HfSource(str(tmp_path)), None)


def test_pinned_revisions_are_used_and_unpinned_datasets_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hf_table("gsm8k", "openai/gsm8k", "main", "test") == HfDataset("openai/gsm8k", "main", "test", GSM8K_SHA)
    assert all(len(sha) == 40 for sha in PINNED_REVISIONS.values())
    with pytest.raises(
        ValueError, match="no pinned revision for HF dataset 'ehovy/race': set EVALSTACK_HF_REVISION_RACE"
    ):
        hf_table("race", "ehovy/race", "high", "test")
    monkeypatch.setenv("EVALSTACK_HF_REVISION_RACE", "main")
    with pytest.raises(ValueError, match="EVALSTACK_HF_REVISION_RACE: 'main' is not a 40-hex commit sha"):
        hf_table("race", "ehovy/race", "high", "test")
    monkeypatch.setenv("EVALSTACK_HF_REVISION_RACE", "a" * 40)
    assert hf_table("race", "ehovy/race", "high", "test").revision == "a" * 40


# --- evalstack data fetch ------------------------------------------------------------------------


def test_fetch_writes_the_original_files_from_the_pinned_tables(mirror: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    written = fetch("arc", str(root), HfSource(str(mirror)))
    assert written == ["arc/ARC-Challenge/ARC-Challenge-Test.jsonl", "arc/ARC-Easy/ARC-Easy-Test.jsonl"]
    for relpath in written:  # the original release's bytes, for the rows the mirror holds
        assert (root / relpath).read_text(encoding="utf-8").splitlines() == _lines(relpath)[:ROWS]
    for subtask in ("easy", "challenge"):
        assert Arc().docs(FileSource(str(root)), subtask) == Arc().docs(HfSource(str(mirror)), subtask)


def test_fetch_command_fills_a_root_that_benchmark_tasks_read(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    monkeypatch.setenv(HF_MIRROR_ENV, str(mirror))
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", str(root))  # the default --root
    assert main(["data", "fetch", "GSM8K"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "gsm8k/test.jsonl", "gsm8k/train.jsonl",
        f"2 file(s) written under {root}; read them with EVALSTACK_BENCHMARK_DATA={root}",
    ]  # fmt: skip
    for split in ("test", "train"):
        assert (root / "gsm8k" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() == _lines(
            f"gsm8k/{split}.jsonl"
        )[:ROWS]
    task = BenchmarkTask(benchmark_spec("GSM8K"))
    assert task.source.description == str(root)
    assert [it.data for it in task.items()] == [doc for _, doc in Gsm8k().docs(HfSource(str(mirror)), None)]
    assert len(task.shots(None)) == 5


def test_fetch_offline_names_the_table_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with pytest.raises(
        FetchError,
        match=r"HF dataset 'openai/gsm8k' \(config main, split test, revision "
        + GSM8K_SHA
        + r"\) could not be loaded from the HF hub: .*needs network access",
    ):
        fetch("gsm8k", str(root), HfSource(None))
    assert not root.exists()


def test_fetch_command_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", "hf")
    assert main(["data", "fetch", "gsm8k"]) == 2
    assert "--root: name the data root folder to fill, or set EVALSTACK_BENCHMARK_DATA" in capsys.readouterr().err
    assert main(["data", "fetch", "BBH", "--root", str(tmp_path)]) == 2
    assert "BBH: its chain-of-thought prompts (cot-prompts/) are not on the HF hub" in capsys.readouterr().err
    assert main(["data", "fetch", "MMLU-Pro", "--root", str(tmp_path)]) == 2
    assert "Unknown benchmark 'MMLU-Pro'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _labelled(relpath: str, labels: str) -> list[tuple[dict[str, Any], str]]:
    values = [v for v in (FIXTURE_DATA / labels).read_text(encoding="utf-8").split() if v]
    rows = [json.loads(line) for line in (FIXTURE_DATA / relpath).read_text(encoding="utf-8").splitlines()]
    return list(zip(rows, values, strict=True))


def _fixture_jsonl(relpath: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURE_DATA / relpath).read_text(encoding="utf-8").splitlines()]


def _race_rows(level: str) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((FIXTURE_DATA / "race" / "test" / level).glob("*.txt")):
        article = json.loads(path.read_text(encoding="utf-8"))
        for question, options, answer in zip(article["questions"], article["options"], article["answers"], strict=True):
            rows.append({"example_id": article["id"], "article": article["article"], "answer": answer,
                         "question": question, "options": options})  # fmt: skip
    return rows


def _math_rows(subject: str) -> list[dict[str, Any]]:
    rows = [r for r in _fixture_jsonl("math/test.jsonl") if subject_key(r["type"]) == subject]
    return [{k: r[k] for k in ("problem", "level", "type", "solution")} for r in rows]


def _targets(answers: dict[str, int]) -> dict[str, list[Any]]:
    return {"choices": list(answers), "labels": list(answers.values())}


# Each benchmark's fixture rows in its hub dataset's schema: (benchmark, repo, {config: {split: rows}}).
HUB_COPIES = {
    "WinoGrande": ("allenai/winogrande", lambda: {"winogrande_xl": {"validation": [
        {k: r[k] for k in ("sentence", "option1", "option2", "answer")} for r in _fixture_jsonl("winogrande/dev.jsonl")
    ]}}),
    "PIQA": ("baber/piqa", lambda: {"default": {"validation": [
        {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(label)}
        for r, label in _labelled("piqa/valid.jsonl", "piqa/valid-labels.lst")
    ]}}),
    "BoolQ": ("aps/super_glue", lambda: {"boolq": {"validation": [
        {"question": r["question"], "passage": r["passage"], "idx": r["idx"], "label": int(r["label"])}
        for r in _fixture_jsonl("boolq/val.jsonl")
    ]}}),
    "TruthfulQA": ("truthfulqa/truthful_qa", lambda: {"multiple_choice": {"validation": [
        {"question": r["question"], **{k: _targets(r[k]) for k in ("mc1_targets", "mc2_targets")}}
        for r in json.loads((FIXTURE_DATA / "truthfulqa/data/mc_task.json").read_text(encoding="utf-8"))
    ]}}),
    "HellaSwag": ("Rowan/hellaswag", lambda: {"default": {"validation": [
        {**r, "label": str(r["label"])} for r in _fixture_jsonl("hellaswag/hellaswag_val.jsonl")
    ]}}),
    "MATH": ("EleutherAI/hendrycks_math", lambda: {
        s: {"test": _math_rows(s)} for s in DEFINITIONS[Benchmark.MATH].subtasks
    }),
    "RACE": ("ehovy/race", lambda: {level: {"test": _race_rows(level)} for level in ("high", "middle")}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HUB_COPIES))
def test_fetched_files_read_as_the_hub_rows_and_the_original_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, configs = HUB_COPIES[name]
    revision = PINNED_REVISIONS.get(repo, "b" * 40)
    monkeypatch.setenv(f"EVALSTACK_HF_REVISION_{name.upper()}", revision)  # PIQA and RACE have no pin
    _hub_repo(tmp_path / "mirror", repo, revision, configs())
    root = tmp_path / "data"
    fetch(name, str(root), HfSource(str(tmp_path / "mirror")))
    definition = DEFINITIONS[resolve_benchmark(name)]
    for subtask in definition.subtasks or (None,):
        fetched = definition.docs(FileSource(str(root)), subtask)
        hub = definition.docs(HfSource(str(tmp_path / "mirror")), subtask)
        original = definition.docs(FileSource(str(FIXTURE_DATA)), subtask)
        assert [doc for _, doc in fetched] == [doc for _, doc in hub] == [doc for _, doc in original]
        if name not in ("PIQA", "RACE"):  # their file and hub ids differ by design (docs/data.md)
            assert [key for key, _ in fetched] == [key for key, _ in hub]
