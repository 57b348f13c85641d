"""The validating pass through pyarrow's JSON reader (``evalstack.data.arrow_tally``) gives the row path's
summary and errors exactly: on every file of the block reader's equivalence cases, on what pyarrow reads
differently from json (two objects on a line, blank lines, huge integers, NaN, whitespace other than
JSON's), with bad lines at block edges, and on real benchmark files; and clean blocks never reach the
row path."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evalstack.data import DatasetError, DatasetReader, DatasetSummary, arrow_tally, reader, scan_dataset, scan_process
from evalstack.data.records import RecordBuilder
from evalstack.spec import ColumnMapping, DatasetSpec
from tests.support.jsonl_cases import INVALID, INVALID_BYTES, PLAIN, VALID, lines, row

BLOCK_SIZES = (1, 45, 160, 1 << 18)  # a line per block, lines cut at edges, several lines, the whole file

# What pyarrow's reader and json's disagree on, or where a check here stands in for the row path's.
ARROW_VALID = {
    "nan reference (missing, as pandas writes it)": lines([row(i) for i in range(11)])
    + '{"prompt": "q", "reference": NaN}\n',
    "infinity in metadata": lines([row(i, x=1.5) for i in range(11)]) + '{"prompt": "q", "x": 1e400}\n',
    "integer beyond 64 bits in metadata": lines([row(i, n=2**70) for i in range(12)]),
    "integer and boolean labels": lines([row(i) | {"reference": i, "response": i % 2 == 0} for i in range(12)]),
    "dates as prompts": lines([row(i) | {"prompt": f"2020-01-{i + 1:02d}"} for i in range(12)]),
    "null metadata everywhere": lines([row(i, note=None) for i in range(12)]),
    "a prompt of a control character and text": lines([row(i) | {"prompt": f"\x1c{i}"} for i in range(12)]),
    "only ground_truth references": lines([{"prompt": f"q{i}", "ground_truth": "g"} for i in range(12)]),
    "a reference column and an alias": lines([row(i, label="l") for i in range(12)]),
}
ARROW_INVALID = {
    "two objects on a line and a blank line": lines([row(i) for i in range(12)])
    + '{"prompt": "a"} {"prompt": "b"}\n\n'
    + lines([row(i) for i in range(3)]),
    "a prompt of unicode whitespace": lines([row(i) for i in range(12)] + [row(99) | {"prompt": "\u3000\x1c\u2028"}]),
    "an integer too long for python": lines([row(i) for i in range(12)]) + '{"prompt": "q", "n": ' + "9" * 5000 + "}\n",
    "a reference too long for python": lines([row(i) for i in range(12)])
    + '{"prompt": "q", "reference": ' + "9" * 5000 + "}\n",
    "an empty object": lines([row(i) for i in range(12)] + [{}]),
    "a key twice with a bad value last": lines([row(i) for i in range(12)])
    + '{"prompt": "a", "prompt": {"x": 1}, "reference": "r"}\n',
}


@pytest.fixture
def arrow_only(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every file goes through pyarrow; the sizes of the blocks the row path built are kept."""
    monkeypatch.setattr(reader, "ARROW_MIN_BYTES", 0)
    monkeypatch.setattr(reader, "_PASSES", {})  # no summary of an earlier pass is reused
    built: list[int] = []
    original = RecordBuilder.build_block

    def counted(self: RecordBuilder, lines: Any, parsed: Any) -> Any:
        built.append(len(parsed))
        return original(self, lines, parsed)

    monkeypatch.setattr(RecordBuilder, "build_block", counted)
    return built


def _outcome(scan: Callable[[], DatasetSummary]) -> tuple[str, Any]:
    try:
        return "ok", dataclasses.asdict(scan())
    except DatasetError as err:
        return "error", str(err)


def _both(path: Path, block_bytes: int, monkeypatch: pytest.MonkeyPatch, mapping: ColumnMapping | None = None) -> Any:
    """The row path's outcome (a limited pass reads row by row) and pyarrow's in this process, with blocks
    of ``block_bytes``."""
    spec = DatasetSpec(str(path), columns=mapping or ColumnMapping())
    rows = _outcome(lambda: scan_dataset(spec, limit=10**9))
    monkeypatch.setattr(arrow_tally, "ARROW_BLOCK_BYTES", block_bytes)
    return rows, _outcome(DatasetReader(spec).scan_here)


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("name", sorted(VALID | ARROW_VALID))
def test_valid_files_summarise_as_the_row_path_does(
    name: str, block_bytes: int, tmp_path: Path, arrow_only: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text((VALID | ARROW_VALID)[name], encoding="utf-8")
    rows, arrow = _both(path, block_bytes, monkeypatch)
    assert rows[0] == "ok", rows
    assert arrow == rows
    assert arrow[1]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("name", sorted(INVALID | INVALID_BYTES | ARROW_INVALID))
def test_invalid_files_fail_with_the_row_paths_message(
    name: str, block_bytes: int, tmp_path: Path, arrow_only: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.jsonl"
    data = INVALID_BYTES.get(name) or (INVALID | ARROW_INVALID)[name].encode("utf-8")
    path.write_bytes(data)
    rows, arrow = _both(path, block_bytes, monkeypatch)
    assert rows[0] == "error" and rows[1].startswith(f"{path}: "), rows
    assert arrow == rows


CLEAN = ["plain", "crlf", "unicode", "no final newline", "integer and boolean labels", "only ground_truth references"]


@pytest.mark.parametrize("name", CLEAN)
def test_clean_blocks_are_tallied_by_pyarrow_alone(
    name: str, tmp_path: Path, arrow_only: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the comparisons above cover pyarrow's path, not only the row path they fall back to."""
    path = tmp_path / "data.jsonl"
    path.write_text((VALID | ARROW_VALID)[name], encoding="utf-8")
    rows, arrow = _both(path, 160, monkeypatch)
    assert arrow == rows and rows[0] == "ok"
    assert arrow_only == []


def test_a_bad_block_goes_the_row_path_and_the_rest_stay_with_pyarrow(
    tmp_path: Path, arrow_only: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(PLAIN + '{"prompt": "q", "reference": "r", "m": {"nested": [1]}}\n' + PLAIN, encoding="utf-8")
    rows, arrow = _both(path, 300, monkeypatch)
    assert arrow == rows and arrow[1]["count"] == 61
    assert len(arrow_only) == 1 and arrow_only[0] < 10  # one block of a few lines, parsed row by row


def test_a_response_missing_in_a_later_block_is_the_row_paths_line(
    tmp_path: Path, arrow_only: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.jsonl"
    rows_in = [row(i) for i in range(40)]
    path.write_text(lines([{"response": "r", "reference": "a"}, *rows_in, {"prompt": "p", "reference": "a"}]))
    rows, arrow = _both(path, 200, monkeypatch)
    assert rows[0] == "error" and "line 1" in rows[1] and "line 42" in rows[1]
    assert arrow == rows


# Each file's mapping, and whether pyarrow tallies it alone (the last two have nested values: lists of
# endings, a question object, which go the row path).
REAL_FILES = {
    "gsm8k/test.jsonl": (ColumnMapping(prompt="question", reference="answer"), True),
    "boolq/val.jsonl": (ColumnMapping(prompt="question", reference="answer", context="passage"), True),
    "math/test.jsonl": (ColumnMapping(prompt="problem", reference="solution"), True),
    "hellaswag/hellaswag_val.jsonl": (ColumnMapping(prompt="ctx", reference="label"), False),
    "arc/ARC-Easy/ARC-Easy-Test.jsonl": (ColumnMapping(prompt="id", reference="answerKey"), False),
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_benchmark_files_summarise_as_the_row_path_does(
    name: str, benchmark_data: Path, arrow_only: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = benchmark_data / name
    mapping, alone = REAL_FILES[name]
    rows, arrow = _both(path, 64 * 1024, monkeypatch, mapping)
    assert rows[0] == "ok", rows
    assert arrow == rows
    assert arrow[1]["count"] == sum(1 for line in path.read_bytes().splitlines() if line.strip())
    assert not arrow[1]["has_responses"] and arrow[1]["has_references"]
    assert (arrow_only == []) is alone


def _big_file(path: Path, bad_line: str | None = None) -> tuple[Path, int]:
    """A file past ``ARROW_MIN_BYTES`` (so ``scan`` checks it in a child process) and the line number of
    ``bad_line``, written near its end."""
    block = lines([row(i, note="x" * 60) for i in range(2000)])
    copies = arrow_tally.ARROW_MIN_BYTES // len(block) + 1
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(copies):
            handle.write(block)
        if bad_line is not None:
            handle.write(bad_line + "\n" + block)
    return path, copies * 2000 + 1


@pytest.mark.parametrize("bad_line", [None, '{"prompt": "q",}', '{"prompt": "  ", "reference": "r"}'])
def test_a_big_files_pass_runs_in_a_child_process_with_the_row_paths_outcome(
    bad_line: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, bad_number = _big_file(tmp_path / "big.jsonl", bad_line)
    spec = DatasetSpec(str(path))
    rows = _outcome(lambda: scan_dataset(spec, limit=10**9))
    children: list[DatasetSpec] = []
    original = scan_process.summary_from_child

    def kept(spec: DatasetSpec) -> Any:
        children.append(spec)
        return original(spec)

    monkeypatch.setattr(reader, "summary_from_child", kept)
    monkeypatch.setattr(reader, "_PASSES", {})
    assert _outcome(lambda: scan_dataset(spec)) == rows
    assert children == [spec]
    if bad_line is None:
        assert rows[0] == "ok" and rows[1]["count"] == bad_number - 1
    else:
        assert rows[0] == "error" and rows[1].startswith(f"{path}: line {bad_number}: ")


def test_the_caller_never_loads_pyarrow(tmp_path: Path) -> None:
    path, _ = _big_file(tmp_path / "big.jsonl")
    code = (
        "import sys; from evalstack.data import scan_dataset; from evalstack.spec import DatasetSpec\n"
        f"summary = scan_dataset(DatasetSpec({str(path)!r}))\n"
        "print(summary.count, 'pyarrow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split()
    assert int(count) == sum(1 for _ in path.open("rb")) and loaded == "False"


def test_a_failed_child_leaves_the_pass_to_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, bad_number = _big_file(tmp_path / "big.jsonl", '{"prompt": 7, "prompt": {}}')
    spec = DatasetSpec(str(path))
    rows = _outcome(lambda: scan_dataset(spec, limit=10**9))
    monkeypatch.setattr(scan_process.sys, "executable", "/bin/false")  # a child that exits 1 at once
    assert _outcome(lambda: scan_dataset(spec)) == rows
    assert rows[0] == "error" and rows[1].startswith(f"{path}: line {bad_number}: ")
