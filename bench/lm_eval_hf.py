"""The local transformers backend side by side with lm-evaluation-harness's ``--model hf`` (HFLM).

    pip install 'evalstack[hf,bench]' accelerate   # HFLM imports accelerate
    EVALSTACK_BENCHMARK_DATA=../shared/benchmarks python -m bench.lm_eval_side_by_side --backend hf [--limit 40]

One tiny GPT-2-style model (byte-level BPE trained on the documents, seeded random weights, the
same builder as the tests) scores MMLU 5-shot (two subjects), ARC-Easy and HellaSwag, one thread each:

- end to end: evalstack (task construction, data, model load, requests, scoring, aggregation per
  task) against lm-eval's ``simple_evaluate(model="hf")`` over the same documents, read through task
  YAMLs that include lm-eval's own ``mmlu``/``arc_easy``/``hellaswag`` configurations with
  ``dataset_path: json`` over converted copies of the same files;
- MMLU 5-shot scoring alone: ``HFBackend.loglikelihood`` against ``HFLM.loglikelihood`` (default
  batch size 1) on the same requests, both including tokenization;
- agreement: the largest log-likelihood difference on those requests, and each task's metrics.

HellaSwag comes from the data root when it has it, else from the in-repo fixture. Not a test: the
figures depend on the machine.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from evalstack.benchmarks.source import DATA_ENV, HF_SOURCE, data_root, open_source
from evalstack.benchmarks.task import BenchmarkTask
from evalstack.models import load_backend
from evalstack.models.base import LoglikelihoodRequest
from evalstack.spec import EvaluationSpec

SUBJECTS = ("abstract_algebra", "anatomy")
# (benchmark, subtasks, label in the printed table)
TASKS = [("MMLU", list(SUBJECTS), "mmlu"), ("ARC", ["easy"], "arc_easy"), ("HellaSwag", None, "hellaswag")]
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _lines(path: Path, limit: int) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)[:limit]


def subset(source: Path, target: Path, limit: int) -> Path:
    """A data root with the first ``limit`` documents of each task (MMLU: split over two subjects)."""
    for subject in SUBJECTS:
        for split, count in (("test", limit // len(SUBJECTS)), ("dev", 5)):
            relpath = Path("mmlu") / split / f"{subject}_{split}.csv"
            (target / relpath.parent).mkdir(parents=True, exist_ok=True)
            (target / relpath).write_text("".join(_lines(source / relpath, count)), encoding="utf-8")
    arc = Path("arc") / "ARC-Easy" / "ARC-Easy-Test.jsonl"
    (target / arc.parent).mkdir(parents=True)
    (target / arc).write_text("".join(_lines(source / arc, limit)), encoding="utf-8")
    hellaswag = Path("hellaswag") / "hellaswag_val.jsonl"
    origin = next(root for root in (source, FIXTURES / "benchmarks", FIXTURES) if (root / hellaswag).is_file())
    (target / hellaswag.parent).mkdir(parents=True)
    (target / hellaswag).write_text("".join(_lines(origin / hellaswag, limit)), encoding="utf-8")
    return target


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def lm_eval_tasks(data: Path, folder: Path) -> list[str]:
    """Task YAMLs including lm-eval's own configurations, over the subset converted to the hub's columns."""
    import lm_eval

    tasks_root = Path(lm_eval.__file__).parent / "tasks"
    names = []

    def write(name: str, include: Path, **overrides: Any) -> None:
        config = {"include": str(include), "task": name, "dataset_path": "json", "dataset_name": None, **overrides}
        (folder / f"{name}.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
        names.append(name)

    for subject in SUBJECTS:
        files = {}
        for split in ("test", "dev"):
            with open(data / "mmlu" / split / f"{subject}_{split}.csv", newline="", encoding="utf-8") as handle:
                rows = [
                    {"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5])}
                    for r in csv.reader(handle)
                ]
            files[split] = _write_jsonl(folder / f"mmlu_{subject}_{split}.jsonl", rows)
        topic = subject.replace("_", " ")
        write(
            f"evalstack_mmlu_{subject}", tasks_root / "mmlu" / "default" / "_default_template_yaml",
            dataset_kwargs={"data_files": files}, num_fewshot=5,
            description=f"The following are multiple choice questions (with answers) about {topic}.\n\n",
        )  # fmt: skip
    arc = []
    for line in (data / "arc" / "ARC-Easy" / "ARC-Easy-Test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        choices = row["question"]["choices"]
        arc.append({
            "id": row["id"], "question": row["question"]["stem"], "answerKey": row["answerKey"],
            "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        })  # fmt: skip
    write(
        "evalstack_arc_easy", tasks_root / "arc" / "arc_easy.yaml",
        dataset_kwargs={"data_files": {"test": _write_jsonl(folder / "arc_easy.jsonl", arc)}},
        training_split=None, validation_split=None,
    )  # fmt: skip
    write(
        "evalstack_hellaswag", tasks_root / "hellaswag" / "hellaswag.yaml",
        dataset_kwargs={"data_files": {"validation": str(data / "hellaswag" / "hellaswag_val.jsonl")}},
        training_split=None,
    )  # fmt: skip
    return names


def _texts(data: Path) -> list[str]:
    """Every prompt and choice of the three tasks: what the tokenizer is trained on."""
    texts = []
    for benchmark, subtasks, _ in TASKS:
        task = BenchmarkTask(_spec(benchmark, subtasks), source=open_source(str(data)))
        for item in task.items():
            prefix = task.definition.shots_prefix(task.shots(item.subtask), item.subtask)
            texts.extend(c + k for c, k in task.definition.ll_requests(item.data, prefix))
    return texts


def _spec(benchmark: str, subtasks: list[str] | None) -> EvaluationSpec:
    return EvaluationSpec(eval_type="benchmark", model="bench", benchmark=benchmark, subtasks=subtasks).validate()


def run_evalstack(model: Path, data: Path) -> tuple[float, dict[str, dict[str, float]]]:
    """End to end per task, as a one-shard evaluation does it: task, items, backend, run, aggregate."""
    start = time.perf_counter()
    metrics = {}
    for benchmark, subtasks, label in TASKS:
        task = BenchmarkTask(_spec(benchmark, subtasks), source=open_source(str(data)))
        items = task.items()
        backend = load_backend(f"hf:{model}")
        agg = task.aggregate(task.run(items, backend))
        backend.close()
        if label == "mmlu":
            metrics |= {f"mmlu_{s}": {"acc": agg.subtasks[s]["acc"]} for s in SUBJECTS}
        else:
            metrics[label] = dict(agg.metrics)
    return time.perf_counter() - start, metrics


def run_lm_eval(model: Path, data: Path, folder: Path) -> tuple[float, float, dict[str, dict[str, float]]]:
    """(end-to-end seconds, of which indexing lm-eval's task registry, metrics)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    names = lm_eval_tasks(data, folder)
    indexing = time.perf_counter()
    manager = TaskManager(include_path=str(folder))
    indexing = time.perf_counter() - indexing
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=names,
        task_manager=manager,
        batch_size=1,
        device="cpu",
    )
    elapsed = time.perf_counter() - start
    metrics = {}
    for name in names:
        result = out["results"][name]
        label = name.removeprefix("evalstack_")
        metrics[label] = {m: float(result[f"{m},none"]) for m in ("acc", "acc_norm") if f"{m},none" in result}
    return elapsed, indexing, metrics


def score_mmlu(model: Path, data: Path) -> tuple[float, float, float, int]:
    """(evalstack seconds, lm-eval seconds, largest |difference|, requests) scoring MMLU 5-shot alone."""
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    task = BenchmarkTask(_spec("MMLU", list(SUBJECTS)), source=open_source(str(data)))
    pairs = list(
        dict.fromkeys(
            pair
            for item in task.items()
            for pair in task.definition.ll_requests(
                item.data, task.definition.shots_prefix(task.shots(item.subtask), item.subtask)
            )
        )
    )
    backend = load_backend(f"hf:{model}")
    start = time.perf_counter()
    mine = backend.loglikelihood([LoglikelihoodRequest(c, k) for c, k in pairs])
    ours = time.perf_counter() - start
    lm = HFLM(
        pretrained=transformers.AutoModelForCausalLM.from_pretrained(model),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model),
        batch_size=1,
        device="cpu",
    )
    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    start = time.perf_counter()
    theirs = lm.loglikelihood(instances, disable_tqdm=True)
    lm_time = time.perf_counter() - start
    gap = max(abs(m.logprob - t[0]) for m, t in zip(mine, theirs, strict=True))
    return ours, lm_time, gap, len(pairs)


def main(limit: int) -> None:
    import torch

    from tests.support.tiny_lm import build

    if data_root() == HF_SOURCE:
        raise SystemExit(f"set {DATA_ENV} to a data root folder (`evalstack data fetch NAME --root DIR` fills one)")
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    torch.set_num_threads(1)  # one thread each, as the measurement
    with tempfile.TemporaryDirectory(prefix="evalstack-bench-hf-") as scratch:
        root = Path(scratch)
        os.environ["HF_DATASETS_CACHE"] = str(root / "datasets-cache")
        data = subset(Path(data_root()), root / "benchmarks", limit)
        (root / "tasks").mkdir()
        model = build("gpt2", _texts(data), root / "model", window=2048, width=64, vocab_size=1000).path
        es_time, es_metrics = run_evalstack(model, data)
        lm_time, indexing, lm_metrics = run_lm_eval(model, data, root / "tasks")
        ours, theirs, gap, n = score_mmlu(model, data)

    print(f"Local transformers backend, tiny GPT-2-style model, 1 thread, first {limit} documents per task")
    print(f"  end to end (MMLU 5-shot, ARC-Easy, HellaSwag): evalstack {es_time:.2f} s, lm-eval {lm_time:.2f} s")
    print(f"    ratio (lm-eval / evalstack): {lm_time / es_time:.2f}x")
    rest = lm_time - indexing
    print(f"    without lm-eval's task registry indexing ({indexing:.2f} s): {rest:.2f} s, {rest / es_time:.2f}x")
    print(f"  MMLU 5-shot scoring alone, {n} requests: evalstack {ours:.2f} s, lm-eval HFLM {theirs:.2f} s")
    print(f"    ratio (lm-eval / evalstack): {theirs / ours:.2f}x; largest log-likelihood difference {gap:.2e}")
    for label in sorted(lm_metrics):
        agree = all(abs(es_metrics[label][m] - v) < 1e-9 for m, v in lm_metrics[label].items())
        print(f"  {label:24s} evalstack {es_metrics[label]}  lm-eval {lm_metrics[label]}  agree: {agree}")
