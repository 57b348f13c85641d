"""Issue 12's scale check: evalstack against the notebook peer on generated labelled JSONL.

For each size it writes two files of about that size (short labels for accuracy and macro-F1,
sentences for BLEU and ROUGE), then for each metric runs, one after the other:

- evalstack: `evalstack evaluate custom-scorer` through the CLI on the local backend (client, runner
  and step processes);
- the peer: a notebook-style script, `pandas.read_json(lines=True)` and then scikit-learn, sacrebleu's
  corpus_bleu or rouge-score over the whole frame.

Wall time and peak RSS summed over every process of the run (the client, the detached local runner and
its step processes: every process whose environment carries the run's marker variable, sampled every
50 ms with psutil, or from /proc when psutil is missing) are printed for both, with the two metric values.

    .venv/bin/python bench/scale.py                      # 1 GB (the issue also asks for 0.3 and 3)
    .venv/bin/python bench/scale.py --size-mb 300 --size-mb 1024 --size-mb 3072
    .venv/bin/python bench/scale.py --size-mb 30 --metric accuracy
    .venv/bin/python bench/scale.py --size-mb 3072 --metric f1 --no-peer   # evalstack alone

The generator is seeded, so a size always gives the same files: a peer's value from one run holds for
another run of the same size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALSTACK = str(Path(sys.executable).with_name("evalstack"))
METRICS = ("accuracy", "f1", "bleu", "rouge")
LABELS = ("positive", "negative", "neutral")
VOCABULARY = (
    "the model answered a question about the weather in paris and the capital of france is paris "
    "while rain falls on the river near old bridges every spring morning"
)
# The peer: what a data scientist writes in a notebook. The result is printed as JSON on the last line.
PEER = {
    "accuracy": "from sklearn.metrics import accuracy_score; value = accuracy_score(df.reference, df.response)",
    "f1": "from sklearn.metrics import f1_score; value = f1_score(df.reference, df.response, average='macro')",
    "bleu": "import sacrebleu; value = sacrebleu.corpus_bleu(list(df.response), [list(df.reference)]).score",
    "rouge": (
        "from rouge_score import rouge_scorer\n"
        "scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL', 'rougeLsum'])\n"
        "scores = [scorer.score(r, p) for p, r in zip(df.response, df.reference)]\n"
        "value = sum(s['rougeL'].fmeasure for s in scores) / len(scores)"
    ),
}
HEADLINE = {"accuracy": "accuracy", "f1": "f1", "bleu": "bleu", "rouge": "rougeL"}


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int
    value: float


def _marked_rss(marker: str) -> int:
    """RSS summed over every process whose environment carries ``marker``: the CLI, and also the local
    runner, which detaches from the CLI (its parent is init), and the runner's step processes."""
    try:
        import psutil
    except ImportError:
        return _proc_marked_rss(marker)
    name, value = marker.split("=", 1)
    total = 0
    for process in psutil.process_iter():
        try:
            if process.environ().get(name) == value:
                total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def _proc_marked_rss(marker: str) -> int:
    """The same sum read from /proc."""
    needle = marker.encode() + b"\0"
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                total += int((entry / "statm").read_text().split()[1]) * page
        except OSError:
            continue
    return total


def measure(command: list[str], env: dict[str, str], memory_limit: int | None = None) -> tuple[float, int, str]:
    """Wall time, peak RSS summed over the run's processes, and the output of ``command`` (its address
    space limited to ``memory_limit`` bytes, if given)."""
    marker = f"EVALSTACK_BENCH_RUN={uuid.uuid4().hex}"
    env = {**env, marker.split("=")[0]: marker.split("=")[1]}
    limit = None if memory_limit is None else lambda: resource.setrlimit(resource.RLIMIT_AS, (memory_limit,) * 2)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, preexec_fn=limit
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, _marked_rss(marker))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    if process.returncode:
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}):\n{text[-3000:]}")
    return seconds, peak, text


def generate(path: Path, target_bytes: int, kind: str) -> int:
    rng = random.Random(1234)
    words = VOCABULARY.split()
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        while handle.tell() < target_bytes:
            block = []
            for _ in range(2000):
                if kind == "labels":
                    reference = rng.choice(LABELS)
                    response = reference if rng.random() < 0.8 else rng.choice(LABELS)
                else:
                    reference = " ".join(rng.choice(words) for _ in range(rng.randint(8, 24)))
                    response = " ".join(w if rng.random() < 0.7 else rng.choice(words) for w in reference.split())
                row = {"prompt": f"Item {count}: what is the answer?", "response": response, "reference": reference}
                block.append(json.dumps(row) + "\n")
                count += 1
            handle.write("".join(block))
    return count


def run_evalstack(dataset: Path, metric: str, workdir: Path) -> Measured:
    output = workdir / f"out-{metric}"
    env = {**os.environ, "EVALSTACK_HOME": str(workdir / "home"), "EVALSTACK_BACKEND": "local"}
    command = [EVALSTACK, "evaluate", "custom-scorer", "--dataset", str(dataset), "--metric", metric]
    command += ["--model", "m", "--output", str(output)]
    if metric == "f1":
        command += ["--hp", "average=macro"]
    seconds, peak, _ = measure(command, env)
    results = next(output.rglob("results.json"))
    value = json.loads(results.read_text())["metrics"][HEADLINE[metric]]
    return Measured(seconds, peak, value)


def run_peer(dataset: Path, metric: str) -> Measured | None:
    """The notebook's run, or None when it fails: at 3 GiB pandas needs more memory than this machine has,
    so its address space is limited to the machine's memory (a MemoryError, not the kernel's OOM killer
    choosing among the machine's processes)."""
    code = f"import json, pandas as pd\ndf = pd.read_json({str(dataset)!r}, lines=True, dtype=str)\n{PEER[metric]}\n"
    code += "print(json.dumps(value))\n"
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        seconds, peak, text = measure([sys.executable, "-c", code], dict(os.environ), memory_limit=memory)
    except RuntimeError as err:
        print(f"the notebook peer failed on {dataset.name} ({metric}): {str(err).strip().splitlines()[-1]}")
        return None
    return Measured(seconds, peak, float(text.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, action="append", help="file size in MiB (repeatable; default 1024)")
    parser.add_argument("--metric", action="append", choices=METRICS, help="metric (repeatable; default all four)")
    parser.add_argument("--dir", default=None, help="where to write the generated files")
    parser.add_argument(
        "--no-peer", action="store_true", help="run evalstack alone (the generated files are the same for a size)"
    )
    args = parser.parse_args()
    sizes = args.size_mb or [1024.0]
    metrics = args.metric or list(METRICS)
    print(f"{'size MiB':>8} {'rows':>10} {'metric':8} {'evalstack s':>11} {'peak MiB':>9} {'peer s':>7} "
          f"{'peak MiB':>9} {'ratio':>6} {'evalstack value':>16} {'peer value':>16} {'load':>9}")  # fmt: skip
    for size in sizes:
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            work = Path(folder)
            files: dict[str, tuple[Path, int]] = {}
            for kind in dict.fromkeys("labels" if m in ("accuracy", "f1") else "text" for m in metrics):
                path = work / f"{kind}.jsonl"
                files[kind] = (path, generate(path, int(size * 1024**2), kind))
            for metric in metrics:
                path, rows = files["labels" if metric in ("accuracy", "f1") else "text"]
                before = os.getloadavg()[0]
                ours = run_evalstack(path, metric, work)
                peer = None if args.no_peer else run_peer(path, metric)
                # The 1-minute load average before and after: the machine may be shared, which inflates times.
                load = f"{before:.1f}-{os.getloadavg()[0]:.1f}"
                theirs = (
                    f"{peer.seconds:7.1f} {peer.peak_rss / 1024**2:9.0f} {ours.seconds / peer.seconds:6.2f}"
                    if peer is not None
                    else f"{'not run' if args.no_peer else 'failed':>7} {'-':>9} {'-':>6}"
                )
                print(
                    f"{size:8.0f} {rows:10,} {metric:8} {ours.seconds:11.1f} {ours.peak_rss / 1024**2:9.0f} "
                    f"{theirs} {ours.value:16.10g} {peer.value if peer else math.nan:16.10g} {load:>9}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
