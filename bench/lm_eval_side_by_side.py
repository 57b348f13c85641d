"""(b) The same task run by evalstack and by lm-evaluation-harness against the same local server.

    pip install 'evalstack[bench]'        # lm-eval, not a runtime dependency
    python -m bench.lm_eval_side_by_side [--limit 200] [--concurrency 8]
    python -m bench.lm_eval_side_by_side --backend hf [--limit 40]   # local transformers: bench/lm_eval_hf.py

Task: GSM8K, 5-shot (first five train examples), strict-match and flexible-extract, on the first
``--limit`` test questions of the original files in shared/benchmarks. lm-eval reads the same files
through a task YAML written to a temp dir (``dataset_path: json`` + ``data_files``), mirroring its own
``gsm8k.yaml`` but with ``fewshot_config: first_n`` (evalstack's few-shot policy), and uses its
``local-completions`` model. Both talk to one zero-latency scripted OpenAI-compatible server that runs
in a child process (so neither client shares a GIL with it). Its answers come from a script: right in
three formats, wrong in one, so both filters matter.

Prints end-to-end wall time (task construction, data loading, prompts, requests, scoring) and
samples/s for evalstack, for lm-eval at its default ``num_concurrent=1``, and for lm-eval at
evalstack's concurrency; the throughput ratios; and whether the scores agree. lm-eval's own
"Requesting API" progress bar shows its request-phase rate. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from evalstack.benchmarks.source import DATA_ENV, HF_SOURCE, data_root
from evalstack.benchmarks.task import BenchmarkTask
from evalstack.models import load_backend
from evalstack.spec import EvaluationSpec

TASK_YAML = """\
task: evalstack_gsm8k_local
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
output_type: generate_until
training_split: train
fewshot_split: train
test_split: test
fewshot_config:
  sampler: first_n
num_fewshot: 5
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
generation_kwargs:
  until: ["Question:", "</s>", "<|im_end|>"]
  do_sample: false
  temperature: 0.0
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: take_first
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: take_first
metadata:
  version: 3.0
"""


def _answer(question: str, gold: str, index: int) -> str:
    number = int(gold.replace(",", ""))
    return [
        f"Adding it up gives {number}.\n#### {number}",
        f"The answer is {number}.",
        f"That is ${number:,}.",
        f"#### {number + 1}",
    ][index % 4]


def _serve(test_path: str, port_queue: Any) -> None:
    from tests.support.openai_server import ScriptedOpenAIServer, prompt_of

    rows = [json.loads(line) for line in Path(test_path).read_text().splitlines()]
    gold = {r["question"]: (r["answer"].split("#### ")[-1].strip(), i) for i, r in enumerate(rows)}

    def script(path: str, body: dict[str, Any]) -> str:
        question = prompt_of(path, body).rsplit("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        answer, index = gold[question]
        return _answer(question, answer, index)

    server = ScriptedOpenAIServer(script).start()
    port_queue.put(server.base_url)
    server.thread.join()


def _subset(root: Path, limit: int) -> Path:
    """A data root holding the first ``limit`` GSM8K test questions and the full train file."""
    if data_root() == HF_SOURCE:
        raise SystemExit(f"set {DATA_ENV} to a data root folder (`evalstack data fetch GSM8K --root DIR` fills one)")
    source = Path(data_root()) / "gsm8k"
    target = root / "gsm8k"
    target.mkdir(parents=True)
    lines = (source / "test.jsonl").read_text().splitlines(keepends=True)[:limit]
    (target / "test.jsonl").write_text("".join(lines))
    (target / "train.jsonl").write_bytes((source / "train.jsonl").read_bytes())
    return root


def run_evalstack(base_url: str, concurrency: int) -> tuple[float, float, dict[str, float], int]:
    """(end-to-end seconds, seconds in task.run, metrics, samples); no response cache."""
    spec = EvaluationSpec(eval_type="benchmark", model="bench", benchmark="GSM8K").validate()
    start = time.perf_counter()
    task = BenchmarkTask(spec)
    items = task.items()
    backend = load_backend(f"openai:{base_url}?model=scripted&api=completions", max_concurrency=concurrency)
    run_start = time.perf_counter()
    records = task.run(items, backend)
    run_time = time.perf_counter() - run_start
    metrics = task.aggregate(records).metrics
    return time.perf_counter() - start, run_time, metrics, len(items)


def run_lm_eval(base_url: str, concurrency: int, data: Path, limit: int) -> tuple[float, dict[str, float]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="lm-eval-task-") as folder:
        yaml = TASK_YAML.format(train=data / "gsm8k" / "train.jsonl", test=data / "gsm8k" / "test.jsonl")
        (Path(folder) / "evalstack_gsm8k_local.yaml").write_text(yaml)
        start = time.perf_counter()
        out = simple_evaluate(
            model="local-completions",
            model_args=(
                f"model=scripted,base_url={base_url}/completions,num_concurrent={concurrency},"
                "max_retries=3,tokenized_requests=False,tokenizer_backend=None,max_gen_toks=512"
            ),
            tasks=["evalstack_gsm8k_local"],
            task_manager=TaskManager(include_path=folder),
            limit=limit,
            batch_size=1,
        )
        elapsed = time.perf_counter() - start
    results = out["results"]["evalstack_gsm8k_local"]
    return elapsed, {
        "exact_match_flexible": float(results["exact_match,flexible-extract"]),
        "exact_match_strict": float(results["exact_match,strict-match"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--backend", choices=("server", "hf"), default="server",
        help="server: GSM8K against a scripted OpenAI-compatible server; hf: the local transformers "
        "backend against lm-eval's HFLM (bench/lm_eval_hf.py)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.backend == "hf":
        from bench.lm_eval_hf import main as compare_hf

        compare_hf(args.limit)
        return

    with tempfile.TemporaryDirectory(prefix="evalstack-bench-") as scratch:
        data = _subset(Path(scratch) / "benchmarks", args.limit)
        os.environ[DATA_ENV] = str(data)
        queue: Any = multiprocessing.get_context("fork").Queue()
        server = multiprocessing.get_context("fork").Process(
            target=_serve, args=(str(data / "gsm8k" / "test.jsonl"), queue), daemon=True
        )
        server.start()
        try:
            base_url = queue.get(timeout=30)
            es_time, es_run, es_metrics, n = run_evalstack(base_url, args.concurrency)
            lm1_time, lm1_metrics = run_lm_eval(base_url, 1, data, args.limit)
            lmc_time, lmc_metrics = run_lm_eval(base_url, args.concurrency, data, args.limit)
        finally:
            server.terminate()
            server.join()

    print(f"GSM8K 5-shot, {n} questions, zero-latency local server (child process)")
    label = f"evalstack  (concurrency {args.concurrency}):"
    print(f"  {label:33s} {es_time:7.2f} s  {n / es_time:8.1f} samples/s  {es_metrics}")
    print(f"    of which task.run (requests + scoring): {es_run:.2f} s, {n / es_run:.1f} samples/s")
    print(f"  lm-eval    (num_concurrent 1):  {lm1_time:7.2f} s  {n / lm1_time:8.1f} samples/s  {lm1_metrics}")
    print(
        f"  lm-eval    (num_concurrent {args.concurrency}):  {lmc_time:7.2f} s  {n / lmc_time:8.1f} samples/s  "
        f"{lmc_metrics}"
    )
    print(f"  ratio vs lm-eval default:        {lm1_time / es_time:6.2f}x")
    print(f"  ratio vs lm-eval same concurrency: {lmc_time / es_time:6.2f}x")
    agree = es_metrics == lm1_metrics == lmc_metrics
    print(f"  scores agree: {agree}")


if __name__ == "__main__":
    main()
