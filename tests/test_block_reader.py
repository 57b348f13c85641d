"""The block fast path (JSON Lines parsed a block at a time, records built and encoded a column at a time)
gives exactly what the row path gives: records, line numbers, metadata key order, summaries, every error
message, and byte-identical records files. Each file is read with blocks of several sizes so bad lines
fall at block edges; the row path is the reader's line-by-line parse with ``RecordBuilder.build``."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from evalstack.data import DatasetError, DatasetReader, block_pool, scan_dataset, text_rows
from evalstack.data.records import RecordBuilder
from evalstack.data.text_rows import HashedLines, JsonlRows
from evalstack.engine import scorer_task
from evalstack.engine.run import manifest_uri, run_shard, shard_uri
from evalstack.engine.scorer_task import _Columns, _score_columns
from evalstack.results.writer import streamed_line
from evalstack.spec import ColumnMapping, DatasetSpec, EvaluationSpec
from evalstack.task import ModelNeeded
from tests.support.jsonl_cases import INVALID, INVALID_BYTES, PLAIN, VALID
from tests.support.jsonl_cases import lines as _lines
from tests.support.jsonl_cases import row as _row

BLOCK_SIZES = (1, 45, 160, 1 << 18)  # one line per block, lines cut at edges, several lines, whole file


def _row_path(path: Path, mapping: ColumnMapping) -> tuple[list[dict[str, Any]], str]:
    """Records (as dicts) and the file's sha256 as the line-by-line path reads them."""
    builder = RecordBuilder(mapping, str(path))
    with path.open("rb") as handle:
        rows = JsonlRows(HashedLines(handle, str(path)), str(path))
        records = [asdict(builder.build(line, row)) for line, row in rows]
        return records, rows.sha256()


def _outcome(read: Any) -> tuple[str, Any]:
    try:
        return "ok", read()
    except DatasetError as err:
        return "error", str(err)


def _block_path(path: Path, mapping: ColumnMapping) -> tuple[list[dict[str, Any]], Any]:
    reader = DatasetReader(DatasetSpec(str(path), columns=mapping))
    records = [asdict(record) for record in reader]
    return [(r, list(r["metadata"])) for r in records], reader.summary


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_read_as_the_row_path_reads_them(
    name: str, block_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_rows, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "data.jsonl"
    path.write_bytes(VALID[name].encode("utf-8"))
    mapping = ColumnMapping()
    expected, sha256 = _row_path(path, mapping)
    outcome, read = _outcome(lambda: _block_path(path, mapping))
    assert outcome == "ok", read
    records, summary = read
    assert records == [(r, list(r["metadata"])) for r in expected]  # metadata keys in the row's own order
    assert summary.sha256 == sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert summary.count == len(expected)
    assert summary.has_responses == all(r["response"] is not None for r in expected)
    assert summary.has_references == all(r["reference"] is not None for r in expected)


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("name", sorted(INVALID) + sorted(INVALID_BYTES))
def test_invalid_files_fail_with_the_row_paths_message(
    name: str, block_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(INVALID_BYTES[name] if name in INVALID_BYTES else INVALID[name].encode("utf-8"))
    spec = DatasetSpec(str(path))
    row_outcome = _outcome(lambda: scan_dataset(spec, limit=10**9))  # a limited pass reads row by row
    assert row_outcome[0] == "error"
    assert row_outcome == _outcome(lambda: _row_path_scan(path))
    monkeypatch.setattr(text_rows, "BLOCK_BYTES", block_bytes)
    assert _outcome(lambda: scan_dataset(spec)) == row_outcome
    assert _outcome(lambda: list(DatasetReader(spec))) == row_outcome


def _row_path_scan(path: Path) -> None:
    """The row path's own errors, then the reader's whole-file checks (by the limited pass)."""
    _row_path(path, ColumnMapping())
    scan_dataset(DatasetSpec(str(path)), limit=10**9)


def test_a_plain_block_takes_the_column_paths(tmp_path: Path) -> None:
    """So the comparisons above cover the fast path, not only the fallback."""
    path = tmp_path / "data.jsonl"
    path.write_text(PLAIN + _lines([_row(i, topic=i, w=0.5, tag="t") for i in range(5)]))
    with path.open("rb") as handle:
        rows = JsonlRows(HashedLines(handle, str(path)), str(path))
        ((lines, parsed),) = list(rows.blocks())
    assert lines == range(1, 36)
    builder = RecordBuilder(ColumnMapping(), str(path))
    assert builder._plain_block(lines[:30], parsed[:30]) is not None
    assert builder._plain_block(lines, parsed) is None  # two key sets: row by row
    block = builder._plain_block(lines[30:], parsed[30:])
    assert block is not None and block.metadata is not None and block.metadata[4] == {"topic": 4, "w": 0.5, "tag": "t"}
    assert builder._plain_block(lines[:30], parsed[:30]).metadata is None  # type: ignore[union-attr]
    columns = _Columns(block.lines, block.prompts, block.responses, [False] * 5, block.references, block.metadata)
    samples = [{"accuracy": [1.0] * 5}]
    assert _score_columns(samples, 5) == {"accuracy": [1.0] * 5}
    assert columns.encoded(samples, _score_columns(samples, 5)).count(b'"accuracy":1.0') == 5


def _encoded_both_ways(columns: _Columns, samples: list[dict[str, list[float]]]) -> tuple[bytes, bytes]:
    scores = _score_columns(samples, len(columns.lines))
    return columns.encoded(samples, scores), b"".join(map(streamed_line, columns.records(samples)))


TRICKY = ['a"b', 'x","y', "back\\", "", "%s %d %%", "naïve ☕ 𝄞", "tab\tnew\nline\u0001", "\\u0041", '"', ","]


@pytest.mark.parametrize(
    "samples",
    [
        [],  # no per-sample metric (e.g. F1 only)
        [{"accuracy": [float(i % 2) for i in range(10)]}],
        [{"rouge1": [0.5 + i for i in range(10)], "rougeL": [1e-7 * i for i in range(10)]},
         {"bleu": [12.25] * 10, "rouge1": [3.0] * 10}],
        [{'we"ird%s': [0.1] * 10}],
        [{"accuracy": [1.0] * 10}, {"other": [1.0] * 9}],  # a preset short of a value: record by record
        [{"accuracy": [1.0] * 9 + [1]}],  # an int: record by record
        [{"accuracy": [1.0] * 9}],  # fewer samples than records
    ],
)
@pytest.mark.parametrize(
    "metadata",
    [
        [{} for _ in range(10)],
        [{"z": i, "a": {"y": [1, None], "b": "é"}, "n": math.nan} for i in range(10)],
        [{"big": 2**70} for _ in range(10)],  # orjson cannot: json writes it
    ],
)
def test_encoded_chunk_equals_streamed_lines(samples: list, metadata: list) -> None:
    columns = _Columns(
        lines=list(range(7, 17)),
        prompts=TRICKY,
        responses=list(reversed(TRICKY)),
        generated=[i % 3 == 0 for i in range(10)],
        references=TRICKY[3:] + TRICKY[:3],
        metadata=metadata,
    )
    fast, slow = _encoded_both_ways(columns, samples)
    assert fast == slow
    assert len(fast.splitlines()) == 10


def test_a_non_finite_score_is_rejected_as_streamed_line_rejects_it() -> None:
    columns = _Columns([1, 2], ["p", "q"], ["r", "s"], [False, False], ["r", "t"], [{}, {}])
    with pytest.raises(ValueError, match=r"record 'line-2': score 'accuracy' is nan, not a finite number"):
        samples = [{"accuracy": [1.0, math.nan]}]
        columns.encoded(samples, _score_columns(samples, 2))


def _spec(path: Path, metrics: list[str]) -> EvaluationSpec:
    return EvaluationSpec(
        eval_type="custom_scorer",
        name="blocks",
        model="openai:http://127.0.0.1:9/v1?model=unused",
        dataset=DatasetSpec(str(path)),
        metrics=metrics,
    )


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every block row by row and every record encoded by streamed_line: the path before blocks."""
    monkeypatch.setattr(JsonlRows, "_plain", lambda self, number, raw: None)
    monkeypatch.setattr(RecordBuilder, "_plain_block", lambda self, lines, rows: None)
    monkeypatch.setattr(scorer_task, "_score_columns", lambda samples, n: None)


@pytest.mark.parametrize("shards", [1, 3])
def test_records_files_are_byte_identical_to_the_row_path(
    shards: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_rows, "BLOCK_BYTES", 700)  # several blocks, plain and not
    rows = [_row(i, topic=i % 5) | {"response": ["yes", "no", " yes "][i % 3]} for i in range(60)]
    rows[17] = _row(17) | {"reference": 1, "response": "1"}  # a number as a label
    rows[40] = _row(40) | {"prompt": "Pourquoi ☕?", "note": 'q","x'}
    text = _lines(rows).replace("\n", "\n\n", 1)
    path = tmp_path / "data.jsonl"
    path.write_text(text)
    spec = _spec(path, ["accuracy", "f1"])

    def files(out: Path) -> list[bytes]:
        for index in range(shards):
            run_shard(spec, "candidate", index, shards, str(out))
        return [
            Path(uri(str(out), "candidate", index, shards)).read_bytes()
            for index in range(shards)
            for uri in (shard_uri, manifest_uri)
        ]

    fast = files(tmp_path / "fast")
    with monkeypatch.context() as patch:
        _slow(patch)
        slow = files(tmp_path / "slow")
    assert fast == slow
    lines = b"".join(fast[0::2]).splitlines()
    assert len(lines) == 60
    assert sorted(json.loads(line)["line"] for line in lines) == [1, *range(3, 62)]


@pytest.fixture
def pooled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Passes over small files go to a pool of two workers; the list counts the pooled passes."""
    monkeypatch.setattr(block_pool, "POOL_MIN_BYTES", 0)
    monkeypatch.setenv("EVALSTACK_METRIC_WORKERS", "2")
    monkeypatch.setattr(text_rows, "BLOCK_BYTES", 700)  # several blocks
    passes: list[int] = []
    original = block_pool.BlockPool.results

    def counted(self: block_pool.BlockPool, *args: Any) -> Any:
        passes.append(self.workers)
        return original(self, *args)

    monkeypatch.setattr(block_pool.BlockPool, "results", counted)
    return passes


def _scored(path: Path) -> Any:
    task = scorer_task.ScorerTask(_spec(path, ["accuracy"]), "candidate")
    return list(task.scored_blocks(0, 1)), task.scan()


def test_a_block_pool_gives_the_same_records_summary_and_errors(
    tmp_path: Path, pooled: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [_row(i, topic=i % 5) for i in range(60)]
    rows[17] = _row(17) | {"reference": 1, "response": "1"}
    files = {
        "valid": _lines(rows).replace("\n", "\n\n", 1),
        "bad line in a later block": _lines([*rows[:40], '{"prompt": "q",}', *rows[40:]]),
        "an array after a block of blank lines": "\n" * 800 + _lines(['[{"prompt": "a"}]', *rows]),
        "a response missing": _lines([*rows[:50], _row(50) | {"response": None}, *rows[50:]]),
        "a reference missing": _lines([*rows[:50], {"prompt": "q", "response": "r"}, *rows[50:]]),
    }
    built_here: list[int] = []  # blocks built in this process (the workers' builders are their own)
    original = RecordBuilder.build_block

    def counted(self: RecordBuilder, lines: Any, rows: Any) -> Any:
        built_here.append(len(rows))
        return original(self, lines, rows)

    pooled_outcomes = {}
    with monkeypatch.context() as patch:
        patch.setattr(RecordBuilder, "build_block", counted)
        for name, text in files.items():
            path = tmp_path / f"{len(pooled_outcomes)}.jsonl"
            path.write_text(text)
            pooled_outcomes[name] = _pass_outcome(path)
            if name == "valid":
                assert built_here == []  # every block was parsed, scored and encoded by a worker
    assert len(pooled) == len(files)  # every pass went to the pool
    assert built_here  # failed blocks were done again here
    monkeypatch.setenv("EVALSTACK_METRIC_WORKERS", "1")  # in this process
    for index, name in enumerate(files):
        assert pooled_outcomes[name] == _pass_outcome(tmp_path / f"{index}.jsonl"), name
    assert len(pooled) == len(files)
    assert pooled_outcomes["valid"][0] == "ok"
    assert "looks like a JSON array" in pooled_outcomes["an array after a block of blank lines"][1]
    assert pooled_outcomes["a response missing"][0] == "ModelNeeded"


def _pass_outcome(path: Path) -> tuple[str, Any]:
    try:
        return "ok", _scored(path)
    except ModelNeeded as err:
        return "ModelNeeded", str(err)
    except ValueError as err:  # DatasetError and the scorer's missing-reference error
        return type(err).__name__, str(err)
