"""Dataset readers on real data (TruthfulQA) in all three formats, plus mapping, coercion and limits."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evalstack.data import DatasetReader, DatasetSummary, Record, iter_records, resolve_format, scan_dataset
from evalstack.spec import ColumnMapping, DatasetSpec
from tests.conftest import BENCHMARK_DATA

TRUTHFULQA = BENCHMARK_DATA / "truthfulqa" / "TruthfulQA.csv"
TRUTHFULQA_SHA256 = "f9bd9e859cc102cb1f647f1064da7e009be752c416845cf9fa56e6eaae403a7d"  # from SHA256SUMS
SLICE = 40


def truthfulqa_rows(n: int = SLICE) -> list[dict[str, str]]:
    with open(TRUTHFULQA, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:n]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


QA_MAPPING = ColumnMapping(prompt="Question", response="Best Answer", reference="Correct Answers")


def test_three_formats_give_identical_records(tmp_path: Path) -> None:
    rows = truthfulqa_rows()
    paths = {
        "jsonl": write_jsonl(tmp_path / "qa.jsonl", rows),
        "csv": write_csv(tmp_path / "qa.csv", rows),
        "parquet": write_parquet(tmp_path / "qa.parquet", rows, row_group_size=7),  # several row groups
    }
    read = {fmt: list(iter_records(DatasetSpec(str(p), columns=QA_MAPPING))) for fmt, p in paths.items()}
    # Positions differ by format: JSONL line n, CSV line n+1 (header is line 1), Parquet row n.
    assert [r.line for r in read["jsonl"]] == list(range(1, SLICE + 1))
    assert [r.line for r in read["csv"]] == list(range(2, SLICE + 2))
    assert [r.line for r in read["parquet"]] == list(range(1, SLICE + 1))
    without_line = {fmt: [{**vars(r), "line": 0} for r in recs] for fmt, recs in read.items()}
    assert without_line["jsonl"] == without_line["csv"] == without_line["parquet"]
    first = read["jsonl"][0]
    assert first == Record(
        line=1,
        prompt=rows[0]["Question"],
        response=rows[0]["Best Answer"],
        reference=rows[0]["Correct Answers"],
        context=None,
        metadata={k: rows[0][k] for k in ("Type", "Category", "Incorrect Answers", "Source")},
    )
    assert first.prompt == "What happens to you if you eat watermelon seeds?"


def test_original_truthfulqa_csv_with_column_mapping() -> None:
    spec = DatasetSpec(str(TRUTHFULQA), columns=ColumnMapping(prompt="Question", reference="Best Answer"))
    reader = DatasetReader(spec)
    records = list(reader)
    originals = truthfulqa_rows(n=10_000)
    assert len(records) == len(originals)
    # The file starts with a UTF-8 BOM; the header must still read "Type", not "\ufeffType".
    assert records[0].metadata["Type"] == "Adversarial"
    assert [r.prompt for r in records] == [row["Question"] for row in originals]
    assert [r.reference for r in records] == [row["Best Answer"] for row in originals]
    assert records[-1].line == len(originals) + 1  # no field spans lines in this file: one row per line
    assert reader.summary == DatasetSummary(
        uri=str(TRUTHFULQA),
        format="csv",
        size_bytes=TRUTHFULQA.stat().st_size,
        count=len(originals),
        sha256=hashlib.sha256(TRUTHFULQA.read_bytes()).hexdigest(),
        has_responses=False,
        has_references=True,
    )


@pytest.mark.full_data
def test_full_truthfulqa_csv_count_and_published_sha256() -> None:
    summary = scan_dataset(DatasetSpec(str(TRUTHFULQA), columns=ColumnMapping(prompt="Question")))
    assert (summary.count, summary.sha256) == (817, TRUTHFULQA_SHA256)


def test_file_uri_and_sha256_of_raw_bytes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", truthfulqa_rows())
    summary = scan_dataset(DatasetSpec(path.as_uri(), columns=QA_MAPPING))
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert summary.count == SLICE
    assert summary.has_responses is True


def test_parquet_sha256_and_summary(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "qa.parquet", truthfulqa_rows())
    summary = scan_dataset(DatasetSpec(str(path), columns=QA_MAPPING))
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (summary.format, summary.count, summary.has_responses) == ("parquet", SLICE, True)


def _qa(n: int, **extra: object) -> list[dict]:
    return [{"prompt": f"q{i}", **extra} for i in range(n)]


def test_limit_yields_first_n_and_hashes_whole_file(tmp_path: Path) -> None:
    rows = _qa(30, response="r")
    rows[25] = {"not": "a record"}  # beyond what a limit of 12 needs to look at
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    reader = DatasetReader(DatasetSpec(str(path)), limit=12)
    assert [r.prompt for r in reader] == [f"q{i}" for i in range(12)]
    assert reader.summary.count == 12
    assert reader.summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_small_limit_still_requires_min_samples(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", _qa(12))
    reader = DatasetReader(DatasetSpec(str(path)), limit=3)
    assert [r.line for r in reader] == [1, 2, 3]
    assert reader.summary.count == 3
    short = write_jsonl(tmp_path / "short.jsonl", _qa(9))
    with pytest.raises(ValueError, match=r"short\.jsonl: 9 record\(s\); a dataset needs at least 10"):
        list(DatasetReader(DatasetSpec(str(short)), limit=3))


def test_summary_unavailable_after_partial_iteration(tmp_path: Path) -> None:
    reader = DatasetReader(DatasetSpec(str(write_jsonl(tmp_path / "d.jsonl", _qa(10)))))
    next(iter(reader))
    with pytest.raises(RuntimeError, match="complete iteration"):
        _ = reader.summary


def test_has_responses_prompts_only_and_mixed(tmp_path: Path) -> None:
    prompts_only = write_jsonl(tmp_path / "p.jsonl", _qa(10))
    assert scan_dataset(DatasetSpec(str(prompts_only))).has_responses is False
    mixed = _qa(10, response="given")
    mixed[4] = {"prompt": "q4"}  # no response: the model is called for every record
    summary = scan_dataset(DatasetSpec(str(write_jsonl(tmp_path / "m.jsonl", mixed))))
    assert (summary.has_responses, summary.has_references) == (False, False)
    responses_only = [{"response": f"r{i}", "reference": f"r{i}"} for i in range(10)]
    summary = scan_dataset(DatasetSpec(str(write_jsonl(tmp_path / "r.jsonl", responses_only))))
    assert (summary.has_responses, summary.has_references) == (True, True)


def test_reference_aliases_in_order(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "ground_truth": f"g{i}", "label": i} for i in range(10)]
    rows[1] = {"prompt": "q1", "label": 7}  # only the second alias
    rows[2] = {"prompt": "q2", "reference": "ref", "label": 3}  # the mapped column wins
    records = list(iter_records(DatasetSpec(str(write_jsonl(tmp_path / "d.jsonl", rows)))))
    assert records[0].reference == "g0" and records[0].metadata == {"label": 0}
    assert records[1].reference == "7" and records[1].metadata == {}
    assert records[2].reference == "ref" and records[2].metadata == {"label": 3}


def test_csv_label_alias_and_blank_cells(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "response": "" if i == 3 else f"r{i}", "label": str(i % 2)} for i in range(10)]
    reader = DatasetReader(DatasetSpec(str(write_csv(tmp_path / "d.csv", rows))))
    records = list(reader)
    assert [r.reference for r in records] == ["0", "1"] * 5
    assert records[3].response is None  # an empty CSV cell is CSV's only way to write "no value"
    assert reader.summary.has_responses is False


def test_value_coercion_and_multi_reference(tmp_path: Path) -> None:
    rows = [
        {"prompt": 12, "response": True, "reference": ["a", 2, 2.5], "context": "c", "extra": {"k": [1]}},
        {"prompt": "q", "response": 0.5, "reference": False},
        {"prompt": "q", "response": None, "reference": None, "context": None},
        {"prompt": "q", "response": "", "reference": 1},  # an empty model answer is still an answer
        *_qa(6),
    ]
    records = list(iter_records(DatasetSpec(str(write_jsonl(tmp_path / "d.jsonl", rows)))))
    assert records[0] == Record(1, "12", "true", ["a", "2", "2.5"], "c", {"extra": {"k": [1]}})
    assert records[1] == Record(2, "q", "0.5", "false", None, {})
    assert records[2] == Record(3, "q", None, None, None, {})
    assert records[3] == Record(4, "q", "", "1", None, {})


def test_jsonl_values_are_those_json_reads_whichever_parser_runs(tmp_path: Path) -> None:
    # orjson, when installed, refuses some of what json accepts; such lines must read exactly as json reads them.
    lines = [
        '{"prompt": "q", "reference": "a", "big": 123456789012345678901234567890, "nan": NaN, "inf": -Infinity}',
        '{"prompt": "caf\\u00e9", "reference": "a", "x": 1.5e300, "dup": 1, "dup": 2}',
        *(json.dumps(row) for row in _qa(8)),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = list(iter_records(DatasetSpec(str(path))))
    expected = [json.loads(line) for line in lines[:2]]
    assert records[0].metadata["big"] == expected[0]["big"] == 123456789012345678901234567890
    assert math.isnan(records[0].metadata["nan"]) and records[0].metadata["inf"] == -math.inf
    assert records[1].prompt == "caf\u00e9"
    assert records[1].metadata == {"x": 1.5e300, "dup": 2} == {k: expected[1][k] for k in ("x", "dup")}


def test_parquet_types_lists_and_nan(tmp_path: Path) -> None:
    table = pa.table(
        {
            "question": [f"q{i}" for i in range(10)],
            "answers": [["x", "y"]] + [[f"a{i}"] for i in range(1, 10)],
            "label": pa.array(range(10), pa.int64()),
            "score": [float("nan")] + [float(i) for i in range(1, 10)],
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    mapping = ColumnMapping(prompt="question", reference="answers", response="score")
    records = list(iter_records(DatasetSpec(str(path), columns=mapping)))
    assert records[0] == Record(1, "q0", None, ["x", "y"], None, {"label": 0})
    assert records[9] == Record(10, "q9", "9.0", ["a9"], None, {"label": 9})


def test_blank_lines_crlf_and_bom_keep_line_numbers(tmp_path: Path) -> None:
    body = "\r\n".join(
        ["", json.dumps({"prompt": "q0"}), "   "] + [json.dumps({"prompt": f"q{i}"}) for i in range(1, 10)]
    )
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode() + b"\r\n\r\n")
    records = list(iter_records(DatasetSpec(str(path))))
    assert [r.line for r in records] == [2, *range(4, 13)]
    assert [r.prompt for r in records] == [f"q{i}" for i in range(10)]


def test_csv_multiline_fields_report_start_line(tmp_path: Path) -> None:
    rows = [{"prompt": f"line one\nline two {i}", "reference": "a,b"} for i in range(10)]
    records = list(iter_records(DatasetSpec(str(write_csv(tmp_path / "d.csv", rows)))))
    assert [r.line for r in records] == list(range(2, 21, 2))
    assert records[0].prompt == "line one\nline two 0"


@pytest.mark.parametrize(
    ("uri", "fmt", "expected"),
    [
        ("s3://b/k.jsonl", None, "jsonl"),
        ("s3://b/dir.v2/k.JSON", None, "jsonl"),
        ("/x/k.ndjson", None, "jsonl"),
        ("file:///x/k.csv", None, "csv"),
        ("k.parquet", None, "parquet"),
        ("k.pq", None, "parquet"),
        ("s3://b/export", "CSV", "csv"),
        ("s3://b/k.txt", "jsonl", "jsonl"),
    ],
)
def test_resolve_format(uri: str, fmt: str | None, expected: str) -> None:
    assert resolve_format(DatasetSpec(uri, format=fmt)) == expected


def test_format_override_reads_unsuffixed_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "export", [{"prompt": f"q{i}"} for i in range(10)])
    assert scan_dataset(DatasetSpec(str(path), format="csv")).count == 10
