"""Pick the task that runs a spec."""

from __future__ import annotations

from evalstack.catalog.benchmarks import ACCURACY_METRICS, BENCHMARKS, resolve_benchmark
from evalstack.catalog.metrics import PRESET_PRIMARY_METRICS, BuiltInMetric, PrimaryMetric
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, EvalTask

ROLES = ("candidate", "base")


def model_reference(spec: EvaluationSpec, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
    if role == "candidate":
        return spec.model
    if not spec.base_model:
        raise ValueError("base_model: the base model is not known for this evaluation")
    return spec.base_model


def build_task(spec: EvaluationSpec, role: str) -> EvalTask:
    model_reference(spec, role)  # validates the role early
    if spec.eval_type == "custom_scorer":
        from evalstack.engine.scorer_task import ScorerTask

        return ScorerTask(spec, role)
    if spec.eval_type == "benchmark":
        from evalstack.benchmarks.task import BenchmarkTask

        return BenchmarkTask(spec, role)
    from evalstack.judge.task import JudgeTask

    return JudgeTask(spec, role)


def primary_metric(spec: EvaluationSpec, aggregate: Aggregate) -> PrimaryMetric | None:
    """The metric the headline reads: the benchmark's declared one (or, when a scoring mode does not
    produce it, e.g. acc_norm in generative letter scoring, the first of its metrics that it did), the
    first preset's, a custom scorer's ``primary_metric`` attribute (recorded by the task in
    ``details``), or the first judge metric. None when a custom scorer declares none."""
    if spec.eval_type == "benchmark":
        info = BENCHMARKS[resolve_benchmark(spec.benchmark or "")]
        name = next((m for m in (info.primary_metric, *info.metrics) if m in aggregate.metrics), info.primary_metric)
        return PrimaryMetric(name, is_accuracy=name in ACCURACY_METRICS)
    if spec.eval_type == "custom_scorer":
        if spec.metrics:
            return PRESET_PRIMARY_METRICS[BuiltInMetric(spec.metrics[0])]
        declared = aggregate.details.get("primary_metric")
        return PrimaryMetric(declared, is_accuracy=declared == "accuracy") if declared else None
    judge = spec.judge
    names = [*judge.builtin_metrics, *(m.name for m in judge.custom_metrics)] if judge else []
    return PrimaryMetric(names[0]) if names else None
