"""Stream a generated ~1 GB JSONL dataset through evalstack.data and report throughput and peak RSS.

    python bench/dataset_stream.py [--gigabytes 1.0] [--dir /tmp]

Peak RSS (ru_maxrss) is measured twice: after generating the file (the baseline of this
process: interpreter, imports, write buffers) and after reading it. Streaming shows up as the
read adding a few MB at most, regardless of the file size.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from evalstack.data import DatasetReader
from evalstack.spec import DatasetSpec


def peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def generate(path: Path, target_bytes: int) -> int:
    """Write records until the file reaches target_bytes; return the record count."""
    filler = "The quick brown fox jumps over the lazy dog. " * 6
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        block: list[str] = []
        while handle.tell() < target_bytes:
            for _ in range(1000):
                row = {
                    "prompt": f"Question {count}: {filler}",
                    "response": f"Answer {count}: {filler}",
                    "reference": [f"ref {count}", "alt"],
                    "topic": count % 13,
                }
                block.append(json.dumps(row))
                count += 1
            handle.write("\n".join(block) + "\n")
            block.clear()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where to write the temporary file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "dataset.jsonl"
        started = time.perf_counter()
        written = generate(path, int(args.gigabytes * 1024**3))
        size = path.stat().st_size
        print(f"generated {written:,} records, {size / 1024**2:,.1f} MiB in {time.perf_counter() - started:.1f} s")
        baseline = peak_rss_bytes()
        reader = DatasetReader(DatasetSpec(str(path)))
        started = time.perf_counter()
        count = sum(1 for _ in reader)
        elapsed = time.perf_counter() - started
        peak = peak_rss_bytes()
    assert count == written == reader.summary.count
    print(
        f"streamed {count:,} records in {elapsed:.1f} s: {count / elapsed:,.0f} records/s, "
        f"{size / 1024**2 / elapsed:,.1f} MiB/s (parse + validate + sha256)"
    )
    print(f"sha256 {reader.summary.sha256}")
    print(
        f"peak RSS {peak / 1024**2:,.1f} MiB (before reading {baseline / 1024**2:,.1f} MiB) "
        f"for a {size / 1024**2:,.1f} MiB file: {peak / size:.1%} of the file size"
    )


if __name__ == "__main__":
    main()
