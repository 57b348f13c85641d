"""Bad-input corpus: every broken dataset fails with a DatasetError naming the file, line and field.

That includes what Python's own parsers stop at: lone surrogates (``"\\ud800"`` escapes, rejected at
read time because no encoder can send them), 5,000-digit integers and 200,000-deep nesting.

Each case is a small literal file written into tmp_path; the expected message is the full text, so
a change in the file/line/field reported is caught, not just "some error".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evalstack.catalog.limits import MAX_DATASET_BYTES
from evalstack.data import DatasetError, scan_dataset, text_rows
from evalstack.spec import ColumnMapping, DatasetSpec


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def prompts(n: int, **extra: object) -> list[dict]:
    return [{"prompt": f"q{i}", **extra} for i in range(n)]


def csv_text(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def csv_ok(n: int) -> list[str]:
    return [f"q{i},a{i}" for i in range(n)]


def parquet(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


def sparse(size: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(size)  # a sparse file: the size check must not read it

    return write


@dataclass
class Case:
    name: str
    filename: str
    content: bytes | Callable[[Path], None] | None  # None: no file at all
    message: str  # "{uri}" is replaced by the dataset URI
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    format: str | None = None


Q_MAP = ColumnMapping(prompt="Question")
CASES = [
    Case(
        "invalid_json",
        "d.jsonl",
        jsonl(*prompts(2)) + b'{"prompt": "q",}\n' + jsonl(*prompts(10)),
        "{uri}: line 3: invalid JSON: Expecting property name enclosed in double quotes (column 16)",
    ),
    Case(
        "non_object_line",
        "d.jsonl",
        jsonl(*prompts(1), [1, 2], *prompts(10)),
        "{uri}: line 2: expected a JSON object, got array",
    ),
    Case(
        "null_line",
        "d.jsonl",
        jsonl(*prompts(4), None, *prompts(10)),
        "{uri}: line 5: expected a JSON object, got null",
    ),
    Case(
        "json_array_not_lines",
        "d.json",
        json.dumps(prompts(10), indent=2).encode(),
        "{uri}: line 1: invalid JSON: Expecting value (column 2) "
        "(JSON Lines needs one object per line; this looks like a JSON array)",
    ),
    Case(
        "missing_prompt",
        "d.jsonl",
        jsonl(*prompts(6), {"reference": "x"}, *prompts(10)),
        "{uri}: line 7: field 'prompt': missing; a record needs a prompt (or a 'response' to score)",
    ),
    Case(
        "mapped_prompt_missing_in_row",
        "d.jsonl",
        jsonl(*[{"Question": "q"}] * 3, {"question": "q"}, *[{"Question": "q"}] * 10),
        "{uri}: line 4: field 'Question' (prompt): missing; a record needs a prompt (or a 'response' to score)",
        columns=Q_MAP,
    ),
    Case(
        "empty_prompt",
        "d.jsonl",
        jsonl(*prompts(3), {"prompt": "  \n"}, *prompts(10)),
        "{uri}: line 4: field 'prompt': empty",
    ),
    Case(
        "prompt_wrong_type",
        "d.jsonl",
        jsonl(*prompts(1), {"prompt": {"text": "q"}}, *prompts(10)),
        "{uri}: line 2: field 'prompt': expected a string, got object",
    ),
    Case(
        "prompt_is_list",
        "d.jsonl",
        jsonl(*prompts(8), {"prompt": ["a", "b"]}, *prompts(10)),
        "{uri}: line 9: field 'prompt': expected a string, got array",
    ),
    Case(
        "response_wrong_type",
        "d.jsonl",
        jsonl(*prompts(2), {"prompt": "q", "response": {"a": 1}}, *prompts(10)),
        "{uri}: line 3: field 'response': expected a string, got object",
    ),
    Case(
        "reference_list_bad_item",
        "d.jsonl",
        jsonl(*prompts(10), {"prompt": "q", "ground_truth": ["a", {"b": 1}]}),
        "{uri}: line 11: field 'ground_truth[1]' (reference): expected a string, got object",
    ),
    Case(
        "reference_empty_list",
        "d.jsonl",
        jsonl(*prompts(2), {"prompt": "q", "reference": []}, *prompts(10)),
        "{uri}: line 3: field 'reference': empty list",
    ),
    Case(
        "prompt_needed_when_model_is_called",
        "d.jsonl",
        jsonl(*prompts(9), {"response": "r"}),
        "{uri}: line 10: field 'prompt': missing; every record needs a prompt because line 1 has no response, "
        "so the model will be called",
    ),
    Case(
        "bad_utf8",
        "d.jsonl",
        jsonl(*prompts(4)) + b'{"prompt": "caf\xe9"}\n' + jsonl(*prompts(10)),
        "{uri}: line 5: not valid UTF-8 (byte 0xe9 is byte 16 of the line)",
    ),
    Case(
        "utf16",
        "d.jsonl",
        jsonl(*prompts(10)).decode().encode("utf-16"),
        "{uri}: line 1: file is UTF-16 (byte order mark); save it as UTF-8",
    ),
    Case("blank_lines_only", "d.jsonl", b"\n \n\r\n", "{uri}: 0 record(s); a dataset needs at least 10"),
    Case("too_few_samples", "d.jsonl", jsonl(*prompts(9)), "{uri}: 9 record(s); a dataset needs at least 10"),
    Case("empty_file", "d.jsonl", b"", "{uri}: empty file"),
    Case("file_not_found", "missing.jsonl", None, "{uri}: file not found"),
    Case(
        "over_10_gib",
        "big.jsonl",
        sparse(MAX_DATASET_BYTES + 1),
        "{uri}: 10,737,418,241 bytes exceeds the 10,737,418,240-byte (10 GiB) dataset limit",
    ),
    Case(
        "unknown_suffix",
        "d.txt",
        jsonl(*prompts(10)),
        "{uri}: cannot tell the format from the suffix '.txt'; name the file .jsonl, .csv or .parquet "
        "or set the dataset format to one of ['jsonl', 'csv', 'parquet']",
    ),
    Case(
        "unknown_format",
        "d.jsonl",
        jsonl(*prompts(10)),
        "{uri}: format 'xml' is not supported; use one of ['jsonl', 'csv', 'parquet']",
        format="xml",
    ),
    Case(
        "csv_missing_header_column",
        "d.csv",
        csv_text("question,answer", *csv_ok(10)),
        "{uri}: line 1: field 'Question' (prompt): column missing (columns: 'question', 'answer')",
        columns=Q_MAP,
    ),
    Case(
        "csv_no_prompt_or_response_column",
        "d.csv",
        csv_text("question,answer", *csv_ok(10)),
        "{uri}: line 1: field 'prompt': column missing; a dataset needs a 'prompt' or a 'response' column "
        "(columns: 'question', 'answer')",
    ),
    Case(
        "csv_duplicate_header",
        "d.csv",
        csv_text("prompt,prompt", *csv_ok(10)),
        "{uri}: line 1: field 'prompt': duplicate column in header",
    ),
    Case(
        "csv_ragged_short",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(3), "q3", *csv_ok(10)),
        "{uri}: line 5: field 'reference': missing (row has 1 of the header's 2 fields)",
    ),
    Case(
        "csv_ragged_long",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(4), "q,a,extra", *csv_ok(10)),
        "{uri}: line 6: field 3: unexpected (row has 3 fields, the header 2: nothing may follow 'reference')",
    ),
    Case(
        "csv_unterminated_quote",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(10), 'q,"open', "more"),
        "{uri}: line 12: malformed CSV: unexpected end of data",
    ),
    Case(
        "csv_blank_prompt_cell",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(2), ",a", *csv_ok(10)),
        "{uri}: line 4: field 'prompt': missing; a record needs a prompt (or a 'response' to score)",
    ),
    Case(
        "csv_bad_utf8",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(1)) + b"q\xff,a\r\n" + csv_text(*csv_ok(10)),
        "{uri}: line 3: not valid UTF-8 (byte 0xff is byte 2 of the line)",
    ),
    Case("csv_header_only", "d.csv", csv_text("prompt,reference"), "{uri}: 0 record(s); a dataset needs at least 10"),
    Case(
        "parquet_missing_column",
        "d.parquet",
        parquet(pa.table({"question": [f"q{i}" for i in range(10)]})),
        "{uri}: schema: field 'Question' (prompt): column missing (columns: 'question')",
        columns=Q_MAP,
    ),
    Case(
        "parquet_wrong_type",
        "d.parquet",
        parquet(pa.table({"prompt": [{"text": f"q{i}"} for i in range(10)]})),
        "{uri}: row 1: field 'prompt': expected a string, got object",
    ),
    Case(
        "parquet_empty_prompt",
        "d.parquet",
        parquet(pa.table({"prompt": ["q0", "", *[f"q{i}" for i in range(2, 10)]]})),
        "{uri}: row 2: field 'prompt': empty",
    ),
    Case(
        "parquet_too_few_rows",
        "d.parquet",
        parquet(pa.table({"prompt": ["q0", "q1"]})),
        "{uri}: 2 record(s); a dataset needs at least 10",
    ),
    Case(
        "lone_surrogate_prompt",
        "d.jsonl",
        jsonl(*prompts(3)) + b'{"prompt": "caf\\ud800e"}\n' + jsonl(*prompts(10)),
        "{uri}: line 4: field 'prompt': lone surrogate U+D800 at character 4; text must be valid Unicode",
    ),
    Case(
        "lone_low_surrogate_response",
        "d.jsonl",
        jsonl(*prompts(2)) + b'{"prompt": "q", "response": "\\udfff"}\n' + jsonl(*prompts(10)),
        "{uri}: line 3: field 'response': lone surrogate U+DFFF at character 1; text must be valid Unicode",
    ),
    Case(
        "lone_surrogate_in_reference_list",
        "d.jsonl",
        jsonl(*prompts(10)) + b'{"prompt": "q", "reference": ["a", "b\\udc00"]}\n',
        "{uri}: line 11: field 'reference[1]': lone surrogate U+DC00 at character 2; text must be valid Unicode",
    ),
    Case(
        "lone_surrogate_in_nested_metadata",
        "d.jsonl",
        jsonl(*prompts(5)) + b'{"prompt": "q", "meta": {"notes": ["ok", "\\ud83d"]}}\n' + jsonl(*prompts(10)),
        "{uri}: line 6: field 'meta.notes[1]': lone surrogate U+D83D at character 1; text must be valid Unicode",
    ),
    Case(
        "lone_surrogate_in_mapped_column",
        "d.jsonl",
        jsonl(*[{"Question": "q"}] * 2) + b'{"Question": "\\ud800"}\n' + jsonl(*[{"Question": "q"}] * 10),
        "{uri}: line 3: field 'Question': lone surrogate U+D800 at character 1; text must be valid Unicode",
        columns=Q_MAP,
    ),
    Case(
        "integer_with_5000_digits",
        "d.jsonl",
        jsonl(*prompts(3)) + b'{"prompt": "q", "n": ' + b"7" * 5000 + b"}\n" + jsonl(*prompts(10)),
        "{uri}: line 4: invalid JSON: a number has more than 4300 digits",
    ),
    Case(
        "nesting_200000_deep",
        "d.jsonl",
        jsonl(*prompts(2)) + b'{"prompt": "q", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n" + jsonl(*prompts(10)),
        "{uri}: line 3: invalid JSON: nested too deeply to read",
    ),
    Case(
        "nested_objects_200000_deep",
        "d.jsonl",
        jsonl(*prompts(12)) + b'{"a": ' * 200_000 + b"1" + b"}" * 200_000 + b"\n",
        "{uri}: line 13: invalid JSON: nested too deeply to read",
    ),
    Case(
        "unterminated_object",
        "d.jsonl",
        jsonl(*prompts(4)) + b'{"prompt": "q"\n' + jsonl(*prompts(10)),
        "{uri}: line 5: invalid JSON: Expecting ',' delimiter (column 15)",
    ),
    Case(
        "single_quoted_json",
        "d.jsonl",
        jsonl(*prompts(1)) + b"{'prompt': 'q'}\n" + jsonl(*prompts(10)),
        "{uri}: line 2: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
    ),
    Case(
        "trailing_garbage",
        "d.jsonl",
        jsonl(*prompts(6)) + b'{"prompt": "q"} extra\n' + jsonl(*prompts(10)),
        "{uri}: line 7: invalid JSON: Extra data (column 17)",
    ),
    Case(
        "two_objects_on_one_line",
        "d.jsonl",
        jsonl(*prompts(3)) + b'{"prompt": "a"}{"prompt": "b"}\n' + jsonl(*prompts(10)),
        "{uri}: line 4: invalid JSON: Extra data (column 16)",
    ),
    Case(
        "raw_control_character_in_string",
        "d.jsonl",
        jsonl(*prompts(2)) + b'{"prompt": "a\x01b"}\n' + jsonl(*prompts(10)),
        "{uri}: line 3: invalid JSON: Invalid control character at (column 14)",
    ),
    Case(
        "string_line",
        "d.jsonl",
        jsonl(*prompts(3), "just text", *prompts(10)),
        "{uri}: line 4: expected a JSON object, got string",
    ),
    Case(
        "number_line",
        "d.jsonl",
        jsonl(*prompts(7), 42, *prompts(10)),
        "{uri}: line 8: expected a JSON object, got number",
    ),
    Case(
        "boolean_line",
        "d.jsonl",
        jsonl(*prompts(2), True, *prompts(10)),
        "{uri}: line 3: expected a JSON object, got boolean",
    ),
    Case(
        "nan_prompt",
        "d.jsonl",
        jsonl(*prompts(3)) + b'{"prompt": NaN}\n' + jsonl(*prompts(10)),
        "{uri}: line 4: field 'prompt': missing; a record needs a prompt (or a 'response' to score)",
    ),
    Case(
        "reference_is_object",
        "d.jsonl",
        jsonl(*prompts(4), {"prompt": "q", "reference": {"text": "a"}}, *prompts(10)),
        "{uri}: line 5: field 'reference': expected a string, got object",
    ),
    Case(
        "context_is_list",
        "d.jsonl",
        jsonl(*prompts(2), {"prompt": "q", "context": ["a"]}, *prompts(10)),
        "{uri}: line 3: field 'context': expected a string, got array",
    ),
    Case(
        "reference_list_null_item",
        "d.jsonl",
        jsonl(*prompts(9), {"prompt": "q", "reference": ["a", None]}, *prompts(1)),
        "{uri}: line 10: field 'reference[1]' (reference): null",
    ),
    Case(
        "label_alias_wrong_type",
        "d.jsonl",
        jsonl(*prompts(3), {"prompt": "q", "label": {"a": 1}}, *prompts(10)),
        "{uri}: line 4: field 'label' (reference): expected a string, got object",
    ),
    Case(
        "mapped_prompt_is_list",
        "d.jsonl",
        jsonl(*[{"Question": "q"}] * 4, {"Question": ["a"]}, *[{"Question": "q"}] * 10),
        "{uri}: line 5: field 'Question' (prompt): expected a string, got array",
        columns=Q_MAP,
    ),
    Case(
        "mapped_prompt_empty",
        "d.jsonl",
        jsonl(*[{"Question": "q"}] * 2, {"Question": "\t"}, *[{"Question": "q"}] * 10),
        "{uri}: line 3: field 'Question' (prompt): empty",
        columns=Q_MAP,
    ),
    Case(
        "bad_utf8_overlong",
        "d.jsonl",
        jsonl(*prompts(3)) + b'{"prompt": "\xc0\x80"}\n' + jsonl(*prompts(10)),
        "{uri}: line 4: not valid UTF-8 (byte 0xc0 is byte 13 of the line)",
    ),
    Case(
        "bad_utf8_cut_sequence",
        "d.jsonl",
        jsonl(*prompts(5)) + b'{"prompt": "\xe2\x82"}\n' + jsonl(*prompts(10)),
        "{uri}: line 6: not valid UTF-8 (byte 0xe2 is byte 13 of the line)",
    ),
    Case(
        "encoded_surrogate_bytes",
        "d.jsonl",
        jsonl(*prompts(1)) + b'{"prompt": "\xed\xa0\x80"}\n' + jsonl(*prompts(10)),
        "{uri}: line 2: not valid UTF-8 (byte 0xed is byte 13 of the line)",
    ),
    Case(
        "utf16_big_endian",
        "d.jsonl",
        b"\xfe\xff" + jsonl(*prompts(10)).decode().encode("utf-16-be"),
        "{uri}: line 1: file is UTF-16 (byte order mark); save it as UTF-8",
    ),
    Case(
        "tsv_suffix",
        "d.tsv",
        jsonl(*prompts(10)),
        "{uri}: cannot tell the format from the suffix '.tsv'; name the file .jsonl, .csv or .parquet "
        "or set the dataset format to one of ['jsonl', 'csv', 'parquet']",
    ),
    Case(
        "no_suffix",
        "dataset",
        jsonl(*prompts(10)),
        "{uri}: cannot tell the format from the suffix ''; name the file .jsonl, .csv or .parquet "
        "or set the dataset format to one of ['jsonl', 'csv', 'parquet']",
    ),
    Case(
        "csv_text_after_closing_quote",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(3), '"q"x,a', *csv_ok(10)),
        "{uri}: line 5: malformed CSV: ',' expected after '\"'",
    ),
    Case(
        "csv_bad_utf8_in_header",
        "d.csv",
        b"pr\xffompt,reference\r\n" + csv_text(*csv_ok(10)),
        "{uri}: line 1: not valid UTF-8 (byte 0xff is byte 3 of the line)",
    ),
    Case(
        "csv_whitespace_prompt",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(5), "  ,a", *csv_ok(10)),
        "{uri}: line 7: field 'prompt': empty",
    ),
    Case(
        "csv_mapped_reference_missing",
        "d.csv",
        csv_text("prompt,answer", *csv_ok(10)),
        "{uri}: line 1: field 'gold' (reference): column missing (columns: 'prompt', 'answer')",
        columns=ColumnMapping(reference="gold"),
    ),
    Case(
        "csv_mapped_response_missing",
        "d.csv",
        csv_text("prompt,answer", *csv_ok(10)),
        "{uri}: line 1: field 'output' (response): column missing (columns: 'prompt', 'answer')",
        columns=ColumnMapping(response="output"),
    ),
    Case(
        "csv_utf16",
        "d.csv",
        csv_text("prompt,reference", *csv_ok(10)).decode().encode("utf-16"),
        "{uri}: line 1: file is UTF-16 (byte order mark); save it as UTF-8",
    ),
    Case(
        "parquet_binary_prompt",
        "d.parquet",
        parquet(pa.table({"prompt": pa.array([f"q{i}".encode() for i in range(10)], pa.binary())})),
        "{uri}: row 1: field 'prompt': expected a string, got bytes",
    ),
    Case(
        "parquet_reference_empty_list",
        "d.parquet",
        parquet(pa.table({"prompt": [f"q{i}" for i in range(10)], "reference": [["a"]] * 3 + [[]] + [["a"]] * 6})),
        "{uri}: row 4: field 'reference': empty list",
    ),
    Case(
        "parquet_null_prompt",
        "d.parquet",
        parquet(pa.table({"prompt": ["q0", "q1", None, *[f"q{i}" for i in range(3, 10)]]})),
        "{uri}: row 3: field 'prompt': missing; a record needs a prompt (or a 'response' to score)",
    ),
]


def write_case(case: Case, directory: Path) -> Path:
    path = directory / case.filename
    if isinstance(case.content, bytes):
        path.write_bytes(case.content)
    elif case.content is not None:
        case.content(path)
    return path


def test_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 70
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    uri = str(write_case(case, tmp_path))
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(uri, format=case.format, columns=case.columns))
    assert str(caught.value) == case.message.format(uri=uri)
    assert isinstance(caught.value, ValueError)


def test_line_too_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real bound is 64 MiB; lowering it keeps the test file small while exercising the same check.
    monkeypatch.setattr(text_rows, "MAX_LINE_BYTES", 100)
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(*prompts(3), {"prompt": "x" * 200}, *prompts(10)))
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(str(path)))
    assert str(caught.value) == f"{path}: line 4: longer than 100 bytes"


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(jsonl(*prompts(10)))
    with pytest.raises(DatasetError, match=rf"^{path}: not a readable Parquet file: .*magic bytes"):
        scan_dataset(DatasetSpec(str(path)))


def test_directory_is_not_a_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with pytest.raises(DatasetError, match=rf"^{folder}: is a directory, not a file$"):
        scan_dataset(DatasetSpec(str(folder)))
