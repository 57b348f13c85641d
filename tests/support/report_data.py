"""Synthesized evaluation outputs for report tests and the report bench.

An MMLU-shaped comparison: log-likelihood records for a fine-tuned and a base model over the real
MMLU subject list, aggregated, compared and written with the engine's own functions
(``aggregate_records``, ``compare``, ``role_files``), so the files have exactly the shapes a run writes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from evalstack import storage
from evalstack.benchmarks.task import aggregate_records
from evalstack.catalog.benchmarks import BENCHMARKS, MMLU_SUBJECTS, Benchmark
from evalstack.engine.tasks import primary_metric
from evalstack.results.compare import compare
from evalstack.results.headline import headline, with_headline
from evalstack.results.writer import EvaluationResult, dumps, jsonl_line, render_report, role_files
from evalstack.spec import EvaluationSpec

MMLU_FULL = BENCHMARKS[Benchmark.MMLU].num_samples  # 14,042
CANDIDATE = "openai:http://127.0.0.1:8000/v1?model=candidate&api=completions&logprobs=echo"
BASE = "openai:http://127.0.0.1:8000/v1?model=base&api=completions&logprobs=echo"


def full_mmlu_sizes() -> dict[str, int]:
    """14,042 questions over the 57 subjects (the catalog has no per-subject sizes: split evenly)."""
    share, extra = divmod(MMLU_FULL, len(MMLU_SUBJECTS))
    return {s: share + (i < extra) for i, s in enumerate(MMLU_SUBJECTS)}


def _record(subject: str, index: int, correct: bool, rng: random.Random) -> dict[str, Any]:
    gold = rng.randrange(4)
    lls = [round(-rng.uniform(1.0, 6.0), 4) for _ in range(4)]
    best = max(range(4), key=lambda i: lls[i])
    if correct != (best == gold):
        # Make the gold choice the best (correct) or push it below the best (wrong).
        lls[gold] = round(lls[best] + 0.5, 4) if correct else round(min(lls) - 0.5, 4)
    return {"id": f"mmlu/{subject}/test-{index}", "subtask": subject, "mode": "loglikelihood",
            "scores": {"acc": float(correct)}, "target": gold, "loglikelihoods": lls}  # fmt: skip


def synthesize_mmlu_comparison(
    output: str, sizes: dict[str, int] | None = None, seed: int = 7, subjects: Sequence[str] | None = None
) -> dict[str, Any]:
    """Write results.json, samples.jsonl, base/..., comparison.json, report.md and spec.json under ``output``.

    Each subject gets a fine-tuned accuracy in [0.35, 0.9] and a base accuracy a few points off it.
    Returns the comparison.
    """
    rng = random.Random(seed)
    sizes = sizes or {s: 20 for s in (subjects or MMLU_SUBJECTS)}
    candidate: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for subject, size in sizes.items():
        p_candidate = rng.uniform(0.35, 0.9)
        p_base = min(0.95, max(0.05, p_candidate - rng.gauss(0.04, 0.08)))
        for index in range(size):
            state = rng.getstate()
            candidate.append(_record(subject, index, rng.random() < p_candidate, rng))
            rng.setstate(state)  # the same question (gold, choices) for both models
            base.append(_record(subject, index, rng.random() < p_base, rng))
    spec = EvaluationSpec(
        eval_type="benchmark", name="mmlu-comparison", model=CANDIDATE, base_model=BASE, benchmark="MMLU",
        evaluate_base_model=True,
    )  # fmt: skip
    results = {}
    for role, records, model in (("candidate", candidate, CANDIDATE), ("base", base, BASE)):
        agg = aggregate_records("MMLU", records, 5)
        primary = primary_metric(spec, agg)
        agg.metrics = headline(agg.metrics, primary)
        agg.details["primary_metric"] = primary.name
        results[role] = (agg, EvaluationResult(
            eval_type="benchmark", name="mmlu-comparison", model=model, role=role, num_samples=len(records),
            metrics=agg.metrics, dataset_sha256="ab" * 32, stderr=agg.stderr,
            confidence_intervals=agg.confidence_intervals, subtasks=agg.subtasks, details=agg.details,
        ))  # fmt: skip
    candidate_agg = results["candidate"][0]
    comparison = with_headline(
        compare(candidate, base, candidate_agg, results["base"][0], seed=1234), primary_metric(spec, candidate_agg)
    )
    files = role_files(output, results["candidate"][1])
    files.update(role_files(storage.join(output, "base"), results["base"][1]))
    files[storage.join(output, "samples.jsonl")] = "".join(map(jsonl_line, candidate))
    files[storage.join(output, "base", "samples.jsonl")] = "".join(map(jsonl_line, base))
    files[storage.join(output, "comparison.json")] = dumps(comparison)
    files[storage.join(output, "report.md")] = render_report(results["candidate"][1], comparison)
    files[storage.join(output, "spec.json")] = spec.to_json()
    for uri, text in files.items():
        storage.write_text(uri, text)
    return comparison


def read_json(output: str, name: str) -> dict[str, Any]:
    return json.loads(storage.read_text(storage.join(output, name)))
