"""Print how long the full evalstack CDK app takes to synthesize.

    python bench/synth_time.py [--repeat N]

Two numbers per run: ``python app.py`` end to end in a fresh process (interpreter, jsii/Node start,
construction, cdk-nag validation, asset staging) and, inside one process, the construction and
``app.synth()`` alone. The app is the default stack plus continuous evaluation and the approval gate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = {
    "modelPackageGroup": "bench-models",
    "evaluation": {"eval_type": "benchmark", "benchmark": "MMLU", "evaluate_base_model": True},
    "thresholds": {"metric": "accuracy", "minScore": 0.5, "minImprovement": 0.0},
}


def app_process_seconds(outdir: str) -> float:
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "CDK_OUTDIR": outdir,
        "CDK_CONTEXT_JSON": json.dumps(CONTEXT),
    }
    start = time.perf_counter()
    subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def in_process_seconds(outdir: str) -> float:
    import aws_cdk as cdk

    from evalstack.constructs.app import build_app

    start = time.perf_counter()
    app = cdk.App(context=CONTEXT, outdir=outdir)
    build_app(app)
    app.synth()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    sys.path.insert(0, str(ROOT))
    process, inside = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            process.append(app_process_seconds(a))
            inside.append(in_process_seconds(b))
    print(f"python app.py (fresh process): median {statistics.median(process):.2f} s over {len(process)} run(s)")
    print(f"construct + synth in process:  median {statistics.median(inside):.2f} s over {len(inside)} run(s)")


if __name__ == "__main__":
    main()
