"""Streaming is a correctness property: reading a dataset must not hold the file in memory.

tracemalloc counts every Python allocation, so its peak while a ~50 MB file is read through the
public reader bounds what the reader keeps alive. A reader that loaded the file (or kept its
records) would peak above the file size; a streaming one stays around one line plus buffers.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import pytest

from evalstack.data import DatasetReader
from evalstack.spec import DatasetSpec

TARGET_BYTES = 50 * 1024**2
PEAK_LIMIT = TARGET_BYTES // 20  # 2.5 MB: far below the file, far above one record


def _write(path: Path, fmt: str) -> int:
    """Write ~TARGET_BYTES of records; return how many."""
    filler = "lorem ipsum dolor sit amet " * 12
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            handle.write("prompt,response,reference,topic\r\n")
        while handle.tell() < TARGET_BYTES:
            if fmt == "jsonl":
                row = {"prompt": f"q{count} {filler}", "response": filler, "reference": "r", "topic": count % 7}
                handle.write(json.dumps(row) + "\n")
            else:
                handle.write(f'q{count} {filler},"{filler}",r,{count % 7}\r\n')
            count += 1
    return count


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_peak_memory_far_below_file_size(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"big.{fmt}"
    expected = _write(path, fmt)
    size = path.stat().st_size
    reader = DatasetReader(DatasetSpec(str(path)))
    count = 0
    last_line = 0
    tracemalloc.start()
    try:
        for record in reader:
            count += 1
            last_line = record.line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size >= TARGET_BYTES
    assert count == reader.summary.count == expected
    assert last_line == (expected if fmt == "jsonl" else expected + 1)
    assert reader.summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < PEAK_LIMIT, f"peak traced memory {peak:,} B while streaming a {size:,} B file"
