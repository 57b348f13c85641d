"""report.html for a full MMLU comparison (14,042 x 2 samples): its size and render time. Prints figures; not a test.

    python -m bench.report_size            # synthesize the run in a temporary folder, render 3 times

The run is synthesized with the engine's own aggregation and comparison over the real MMLU subject
list from the catalog (tests/support/report_data.py), plus a sample_timings.jsonl with a seeded model
time per sample (so the slowest-samples list is filled); the render reads the files as the Report
step does (results, comparison, sample times and both samples.jsonl streamed). Then the viewer's
compare page for two such executions (tables and plots).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from evalstack.results.html_report import load_inputs, render_html
from evalstack.results.sample_timings import FILE_NAME
from evalstack.runtime.execution import EvaluationPipelineExecution
from evalstack.view.executions import ExecutionView, read_files
from evalstack.view.pages import compare_page
from tests.support.report_data import full_mmlu_sizes, synthesize_mmlu_comparison

LIMIT_BYTES = 2 * 1024 * 1024


def _write_timings(output: str, seed: int) -> None:
    """One row per sample, as the Report step writes them: four requests each (one per choice)."""
    rng = random.Random(seed)
    with Path(output, "samples.jsonl").open() as samples, Path(output, FILE_NAME).open("w") as out:
        for line, text in enumerate(samples, start=1):
            seconds = sum(rng.lognormvariate(-2.0, 0.6) for _ in range(4))
            row = {"id": json.loads(text)["id"], "line": line, "seconds": seconds, "requests": 4, "cached": 0}
            out.write(json.dumps(row, sort_keys=True) + "\n")


def _timed(render: Callable[[], str], repeat: int) -> tuple[str, list[float]]:
    times, page = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        page = render()
        times.append(time.perf_counter() - started)
    return page, times


def _execution(output: str, index: int) -> EvaluationPipelineExecution:
    arn = f"arn:aws:sagemaker:us-east-1:000000000000:pipeline/p/execution/{index}"
    return EvaluationPipelineExecution(name=Path(output).name, arn=arn, status="Succeeded", eval_type="benchmark",
                                       s3_output_path=output, creation_time=datetime.now(UTC))  # fmt: skip


def _median(times: list[float]) -> str:
    return (f"median {statistics.median(times):.2f} s over {len(times)} runs "
            f"(min {min(times):.2f} s, max {max(times):.2f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="renders to time")
    args = parser.parse_args()
    sizes = full_mmlu_sizes()
    with tempfile.TemporaryDirectory(prefix="evalstack-report-bench-") as folder:
        outputs = [str(Path(folder) / f"run{seed}") for seed in (7, 8)]
        for seed, output in zip((7, 8), outputs, strict=True):
            synthesize_mmlu_comparison(output, sizes, seed=seed)
            _write_timings(output, seed)
        page, times = _timed(lambda: render_html(load_inputs(outputs[0])), args.repeat)
        size = len(page.encode("utf-8"))
        samples = sum(Path(outputs[0], *p).stat().st_size for p in (["samples.jsonl"], ["base", "samples.jsonl"]))
        views = [ExecutionView(_execution(output, i), read_files(output)) for i, output in enumerate(outputs)]
        compared, compare_times = _timed(lambda: compare_page(views), args.repeat)
    total = sum(sizes.values())
    print(f"MMLU comparison: {len(sizes)} subjects, {total:,} x 2 samples ({samples / 1e6:.1f} MB of samples)")
    print(f"report.html: {size:,} bytes ({size / LIMIT_BYTES:.0%} of the 2 MB budget)")
    print(f"render (read files + plots + HTML): {_median(times)}")
    print(f"viewer compare page, 2 such executions: {len(compared.encode('utf-8')):,} bytes; {_median(compare_times)}")


if __name__ == "__main__":
    main()
