"""Pick the task that runs a spec."""

from __future__ import annotations

from evalstack.spec import EvaluationSpec
from evalstack.task import EvalTask

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
