"""The evaluation step reads a dataset that carries its responses once, scoring while it validates; an
item that needs a model ends that attempt and the step counts, validates and streams the items again."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalstack.data import DatasetReader, text_rows
from evalstack.engine import run
from evalstack.engine.run import progress_uri, report, run_shard, shard_uri
from evalstack.engine.scorer_task import ScorerTask
from evalstack.spec import DatasetSpec, EvaluationSpec
from tests.support.openai_server import Reply, chat_body, prompt_of, serve


def _dataset(path: Path, rows: int, answered: int) -> Path:
    """``rows`` labelled records; the first ``answered`` carry a response (half of them right)."""
    lines = []
    for i in range(rows):
        row = {"prompt": f"Label item {i}", "reference": "yes" if i % 3 else "no"}
        if i < answered:
            row["response"] = row["reference"] if i % 2 else "maybe"
        lines.append(json.dumps(row) + "\n")
    path.write_text("".join(lines))
    return path


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each pass over a dataset that starts, by its URI (every pass, record by record or block by block,
    is one call of ``mapped``)."""
    started: list[str] = []
    original = DatasetReader.mapped

    def counted(self: DatasetReader, *args: Any, **kwargs: Any) -> Iterator:
        started.append(self.spec.uri)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DatasetReader, "mapped", counted)
    return started


def _spec(dataset: Path, model: str = "openai:http://127.0.0.1:9/v1?model=unused") -> EvaluationSpec:
    return EvaluationSpec(
        eval_type="custom_scorer", name="one-pass", model=model, dataset=DatasetSpec(str(dataset)), metrics=["accuracy"]
    )


def test_answered_dataset_is_read_once(tmp_path: Path, passes: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_rows, "BLOCK_BYTES", 100)  # several blocks of about two lines
    monkeypatch.setattr(run, "PROGRESS_ITEMS", 2)  # several progress writes
    spec = _spec(_dataset(tmp_path / "data.jsonl", 15, answered=15))
    records = str(tmp_path / "records")
    for index in range(2):
        run_shard(spec, "candidate", index, 2, records)
    assert passes == [spec.dataset.uri] * 2  # one per shard: no separate validation pass
    progress = [json.loads(Path(progress_uri(records, "candidate", i, 2)).read_text()) for i in range(2)]
    assert progress == [{"done": 8, "total": 8}, {"done": 7, "total": 7}]
    second = Path(shard_uri(records, "candidate", 1, 2)).read_text().splitlines()
    assert [json.loads(line)["id"] for line in second] == [f"line-{i}" for i in range(2, 16, 2)]
    out = report(spec, str(tmp_path / "out"), records_uri=records)
    right = sum(1 for i in range(15) if i % 2)  # odd rows answer their reference, even rows "maybe"
    assert out.candidate.metrics["accuracy"] == right / 15
    assert out.candidate.num_samples == 15


def test_a_missing_response_falls_back_to_validating_then_calling_the_model(
    tmp_path: Path, passes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "SCORING_CHUNK", 4)
    dataset = _dataset(tmp_path / "data.jsonl", 12, answered=6)  # lines 7-12 have no response

    def answer(path: str, body: dict) -> Reply:
        return Reply(chat_body("yes" if "item 9" in prompt_of(path, body) else "no"))

    with serve(answer) as server:
        spec = _spec(dataset, model=f"openai:{server.base_url}?model=scripted&api=chat")
        run_shard(spec, "candidate", 0, 1, str(tmp_path / "records"))
        asked = [prompt_of(path, body) for path, body in server.requests]
    # The one pass stopped at the chunk holding line 7; then a validating pass and the model's pass.
    assert passes == [str(dataset)] * 3
    assert sorted(int(p.rsplit(" ", 1)[1]) for p in asked if "Label item" in p) == list(range(6, 12))
    lines = Path(shard_uri(str(tmp_path / "records"), "candidate", 0, 1)).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [f"line-{i}" for i in range(1, 13)]
    assert [r["generated"] for r in records] == [False] * 6 + [True] * 6
    assert [r["response"] for r in records[6:]] == ["no", "no", "no", "yes", "no", "no"]


def test_a_bad_line_after_answered_ones_fails_naming_it_and_uploads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "SCORING_CHUNK", 4)
    dataset = _dataset(tmp_path / "data.jsonl", 12, answered=12)
    dataset.write_text(dataset.read_text() + '{"prompt": "x", "response": 3.5, "reference": ["a", null]}\n')
    with pytest.raises(ValueError, match=r"data\.jsonl: line 13: field 'reference\[1\]' \(reference\): null"):
        run_shard(_spec(dataset), "candidate", 0, 1, str(tmp_path / "records"))
    assert not Path(shard_uri(str(tmp_path / "records"), "candidate", 0, 1)).exists()


def test_a_second_count_of_an_unchanged_file_is_not_a_second_pass(tmp_path: Path, passes: list[str]) -> None:
    """The client counts and checks a dataset with several tasks; the count of an unchanged file is kept."""
    dataset = _dataset(tmp_path / "data.jsonl", 12, answered=12)
    spec = _spec(dataset)
    assert ScorerTask(spec, "candidate").item_count() == 12
    assert ScorerTask(spec, "candidate").item_count() == 12
    assert passes == [str(dataset)]
    with dataset.open("a") as handle:  # changed: read again
        handle.write(json.dumps({"prompt": "one more", "response": "no", "reference": "no"}) + "\n")
    assert ScorerTask(spec, "candidate").item_count() == 13
    assert passes == [str(dataset)] * 2
    limited = dataclasses.replace(spec, hyperparameters={"limit": 11})
    assert ScorerTask(limited, "candidate").item_count() == 11  # another reading of the file: its own pass
    assert passes == [str(dataset)] * 3
