"""The HF datasets path offline: pinned revisions, and a local hub mirror read through ``datasets``.

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

from evalstack.benchmarks.definitions.arc import Arc
from evalstack.benchmarks.definitions.gsm8k import Gsm8k
from evalstack.benchmarks.hf import PINNED_REVISIONS, hf_table
from evalstack.benchmarks.source import HF_MIRROR_ENV, FileSource, HfDataset, HfSource, open_source
from tests.conftest import BENCHMARK_DATA

ARC_SHA = PINNED_REVISIONS["allenai/ai2_arc"]
GSM8K_SHA = PINNED_REVISIONS["openai/gsm8k"]
ROWS = 7


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No hub, and a private datasets cache (datasets reads these at import time, so set them directly).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def _jsonl(relpath: str) -> list[dict[str, Any]]:
    lines = (BENCHMARK_DATA / relpath).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


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
    arc = [_arc_hub_row(r) for r in _jsonl("arc/ARC-Easy/ARC-Easy-Test.jsonl")[:ROWS]]
    _hub_repo(root, "allenai/ai2_arc", ARC_SHA, {"ARC-Easy": {"test": arc}})
    gsm8k = {split: _jsonl(f"gsm8k/{split}.jsonl")[:ROWS] for split in ("train", "test")}
    _hub_repo(root, "openai/gsm8k", GSM8K_SHA, {"main": gsm8k})
    return root


def test_arc_hf_rows_give_the_docs_of_the_original_file(mirror: Path) -> None:
    hf_docs = Arc().docs(HfSource(str(mirror)), "easy")
    file_docs = Arc().docs(FileSource(str(BENCHMARK_DATA)), "easy")[:ROWS]
    assert hf_docs == file_docs
    assert hf_docs[0][0] == "Mercury_417466"


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
