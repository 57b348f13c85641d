"""report.html for a full MMLU comparison (14,042 x 2 samples): its size and render time. Prints figures; not a test.

    python -m bench.report_size            # synthesize the run in a temporary folder, render 3 times

The run is synthesized with the engine's own aggregation and comparison over the real MMLU subject
list from the catalog (tests/support/report_data.py); the render reads the files as the Report step
does (results, comparison, both samples.jsonl streamed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from evalstack.results.html_report import load_inputs, render_html
from tests.support.report_data import full_mmlu_sizes, synthesize_mmlu_comparison

LIMIT_BYTES = 2 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="renders to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalstack-report-bench-") as folder:
        output = str(Path(folder) / "run")
        sizes = full_mmlu_sizes()
        synthesize_mmlu_comparison(output, sizes)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            page = render_html(load_inputs(output))
            times.append(time.perf_counter() - started)
        size = len(page.encode("utf-8"))
        samples = Path(output, "samples.jsonl").stat().st_size + Path(output, "base", "samples.jsonl").stat().st_size
    total = sum(sizes.values())
    print(f"MMLU comparison: {len(sizes)} subjects, {total:,} x 2 samples ({samples / 1e6:.1f} MB of samples)")
    print(f"report.html: {size:,} bytes ({size / LIMIT_BYTES:.0%} of the 2 MB budget)")
    print(
        f"render (read files + plots + HTML): median {statistics.median(times):.2f} s over {len(times)} runs "
        f"(min {min(times):.2f} s, max {max(times):.2f} s)"
    )


if __name__ == "__main__":
    main()
