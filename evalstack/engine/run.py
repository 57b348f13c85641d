"""Run a spec: evaluate shards of items against a model, then merge them into a report.

The same two calls serve the pipeline's Processing steps (one shard per instance) and the
in-process path used by tests and the CLI, so a sharded run and a one-shot run share every line.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalstack import storage
from evalstack.catalog.hyperparameters import request_concurrency
from evalstack.engine.tasks import build_task, model_reference, primary_metric
from evalstack.models import cached_backend
from evalstack.results.headline import headline, with_headline
from evalstack.results.writer import EvaluationResult, dumps, render_report, role_files
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, EvalTask

PROGRESS_CHUNK = 256
PROGRESS_NAME = re.compile(r"/shard-\d{5}-of-\d{5}\.json$")
SHARD_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})\.jsonl$")


def records_prefix(output_uri: str, role: str) -> str:
    return storage.join(output_uri, "records", role)


def shard_uri(output_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(records_prefix(output_uri, role), f"shard-{index:05d}-of-{count:05d}.jsonl")


def role_uri(output_uri: str, role: str) -> str:
    return output_uri if role == "candidate" else storage.join(output_uri, role)


def run_shard(
    spec: EvaluationSpec,
    role: str,
    shard_index: int,
    shard_count: int,
    output_uri: str,
    *,
    task: EvalTask | None = None,
) -> str:
    """Evaluate items ``i`` with ``i % shard_count == shard_index``; write their records atomically."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard index {shard_index} is outside 0..{shard_count - 1}")
    task = task or build_task(spec, role)
    items = task.items()[shard_index::shard_count]
    # Items run in chunks big enough to keep every connection busy; after each chunk the shard's
    # progress file says how far it got, which `evalstack evaluate` shows as a progress bar.
    concurrency = request_concurrency(spec.hyperparameters)
    chunk = max(PROGRESS_CHUNK, 8 * concurrency)
    progress = progress_uri(output_uri, role, shard_index, shard_count)
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        model = None
        if task.needs_model and items:
            model = stack.enter_context(cached_backend(model_reference(spec, role), max_concurrency=concurrency))
        for start in range(0, len(items), chunk):
            records.extend(task.run(items[start : start + chunk], model))
            storage.write_text(
                progress, json.dumps({"done": len(records), "total": len(items)}), kms_key_id=spec.kms_key_id
            )
    uri = shard_uri(output_uri, role, shard_index, shard_count)
    storage.write_text(uri, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), kms_key_id=spec.kms_key_id)
    return uri


def progress_uri(output_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(output_uri, "progress", role, f"shard-{index:05d}-of-{count:05d}.json")


def read_progress(output_uri: str) -> tuple[int, int]:
    """Items done and items known, summed over every shard and role that has reported so far."""
    done = total = 0
    for uri in storage.list_uris(storage.join(output_uri, "progress")):
        if not PROGRESS_NAME.search(uri):  # e.g. a temporary file of a write in progress
            continue
        figures = json.loads(storage.read_text(uri))
        done, total = done + figures["done"], total + figures["total"]
    return done, total


def read_records(output_uri: str, role: str) -> list[dict[str, Any]]:
    """Every shard's records; fails if a shard is missing or shard counts disagree."""
    found: dict[int, str] = {}
    counts = set()
    for uri in storage.list_uris(records_prefix(output_uri, role)):
        match = SHARD_NAME.search(uri)
        if match:
            found[int(match.group(1))] = uri
            counts.add(int(match.group(2)))
    if len(counts) != 1:
        raise RuntimeError(
            f"{records_prefix(output_uri, role)}: expected shards of one run, found counts {sorted(counts)}"
        )
    (count,) = counts
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise RuntimeError(f"{records_prefix(output_uri, role)}: missing shard(s) {missing} of {count}")
    records: list[dict[str, Any]] = []
    for index in range(count):
        records.extend(json.loads(line) for line in storage.read_text(found[index]).splitlines() if line)
    return records


@dataclass
class Report:
    candidate: EvaluationResult
    base: EvaluationResult | None = None
    comparison: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """Flat figures for a pipeline property file (read with Std:JsonGet) and MLflow."""
        out: dict[str, Any] = {"metrics": self.candidate.metrics, "num_samples": self.candidate.num_samples}
        if self.base is not None:
            out["base_metrics"] = self.base.metrics
        if self.comparison is not None:
            # Per metric, so a quality gate reads e.g. improvement.accuracy with JsonGet.
            out["improvement"] = self.comparison.get("improvements", {})
            out["significant_regression"] = bool(self.comparison.get("significant_regression", False))
        return out


def _result(spec: EvaluationSpec, task: EvalTask, role: str, agg: Aggregate, n: int) -> EvaluationResult:
    return EvaluationResult(
        eval_type=spec.eval_type,
        name=spec.name,
        model=model_reference(spec, role),
        role=role,
        num_samples=n,
        metrics=agg.metrics,
        dataset_sha256=task.dataset_sha256(),
        stderr=agg.stderr,
        confidence_intervals=agg.confidence_intervals,
        subtasks=agg.subtasks,
        details=agg.details,
    )


def _ordered(task: EvalTask, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in item order, whatever the shard interleaving, so merged output is byte-identical."""
    order = {item.id: i for i, item in enumerate(task.items())}
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids) or set(ids) != set(order):
        raise RuntimeError(
            f"shard records do not cover the items exactly once ({len(ids)} records, {len(order)} items)"
        )
    return sorted(records, key=lambda r: order[r["id"]])


def _finish_role(
    spec: EvaluationSpec, role: str, records_uri: str, task: EvalTask | None
) -> tuple[EvaluationResult, list[dict[str, Any]], Aggregate, EvalTask]:
    task = task or build_task(spec, role)
    records = _ordered(task, read_records(records_uri, role))
    agg = task.aggregate(records)
    primary = primary_metric(spec, agg)
    agg.metrics = headline(agg.metrics, primary)
    if primary is not None:
        agg.details["primary_metric"] = primary.name
    for record in records:
        extra = agg.sample_scores.get(record["id"])
        if extra:
            record["scores"] = {**record.get("scores", {}), **extra}
    return _result(spec, task, role, agg, len(records)), records, agg, task


def report(
    spec: EvaluationSpec, output_uri: str, *, records_uri: str | None = None, tasks: dict[str, EvalTask] | None = None
) -> Report:
    """Merge shards, aggregate, write results (and the comparison when the base ran).

    Records are read from ``records_uri`` (default: the output itself, where pipeline steps put them).
    Every file's content is built before the first one is written, so a failing scorer, judge or
    comparison leaves no results behind; results.json goes last, as the mark of a complete role.
    """
    records_uri = records_uri or output_uri
    tasks = tasks or {}
    candidate, cand_records, cand_agg, task = _finish_role(spec, "candidate", records_uri, tasks.get("candidate"))
    out = Report(candidate)
    files: dict[str, str] = role_files(role_uri(output_uri, "candidate"), candidate, cand_records)
    if spec.evaluate_base_model:
        out.base, base_records, base_agg, _ = _finish_role(spec, "base", records_uri, tasks.get("base"))
        files.update(role_files(role_uri(output_uri, "base"), out.base, base_records))
        task_compare = getattr(task, "compare", None)
        if task_compare is not None:
            comparison = task_compare(cand_records, base_records)
        else:
            from evalstack.results.compare import compare

            seed = int(spec.hyperparameters.get("seed", 1234))
            comparison = compare(cand_records, base_records, cand_agg, base_agg, seed)
        out.comparison = with_headline(comparison, primary_metric(spec, cand_agg))
        files[storage.join(output_uri, "comparison.json")] = dumps(out.comparison)
    files[storage.join(output_uri, "report.md")] = render_report(candidate, out.comparison)
    for uri in sorted(files, key=lambda u: u.endswith("/results.json")):
        storage.write_text(uri, files[uri], kms_key_id=spec.kms_key_id)
    return out


def evaluate_in_process(spec: EvaluationSpec, output_uri: str) -> Report:
    """One shard per role, then the report: what a one-instance pipeline does, in this process.

    Every item is read (and so validated) before anything is written, shard records stay in a
    temporary folder, and the report writes only once everything is computed, so a failure leaves
    no output behind.
    """
    roles = ["candidate", "base"] if spec.evaluate_base_model else ["candidate"]
    tasks = {role: build_task(spec, role) for role in roles}
    for task in tasks.values():
        task.items()
    with tempfile.TemporaryDirectory(prefix="evalstack-records-") as scratch:
        for role, task in tasks.items():
            run_shard(spec, role, 0, 1, scratch, task=task)
        result = report(spec, output_uri, records_uri=scratch, tasks=tasks)
    storage.write_text(storage.join(output_uri, "spec.json"), spec.to_json(), kms_key_id=spec.kms_key_id)
    return result
