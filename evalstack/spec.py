"""EvaluationSpec: the one versioned JSON document that describes an evaluation completely.

Evaluators build it, it travels as a file (``spec.json``) because pipeline parameters are capped
at 1,024 characters, and every pipeline step reads it back with :func:`EvaluationSpec.from_json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from evalstack.catalog import resolve_benchmark, resolve_builtin_metric, resolve_judge_metric
from evalstack.catalog.benchmarks import BENCHMARKS
from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.catalog.limits import MAX_CUSTOM_METRICS, MAX_PROMPT_TEMPLATE_BYTES
from evalstack.masking import mask_value

SPEC_VERSION = 1
EVAL_TYPES = ("benchmark", "custom_scorer", "llm_as_judge")
EvalType = Literal["benchmark", "custom_scorer", "llm_as_judge"]


class SpecError(ValueError):
    """An invalid spec; the message names the field (and the file, when read from one)."""


@dataclass
class ColumnMapping:
    """Which dataset fields hold the prompt, the response and the reference answer."""

    prompt: str = "prompt"
    response: str = "response"
    reference: str = "reference"
    context: str = "context"

    def __post_init__(self) -> None:
        for role, column in vars(self).items():
            if not isinstance(column, str) or not column:
                shown = type(column).__name__ if not isinstance(column, str) else "an empty string"
                raise SpecError(f"columns.{role}: must be a column name (a non-empty string), got {shown} {column!r}")


@dataclass
class DatasetSpec:
    uri: str
    format: str | None = None  # jsonl | csv | parquet; inferred from the suffix when None
    columns: ColumnMapping = field(default_factory=ColumnMapping)


@dataclass
class CustomJudgeMetric:
    name: str
    description: str
    prompt_template: str
    scale: tuple[int, int] = (1, 5)


@dataclass
class JudgeSpec:
    evaluator_model: str
    builtin_metrics: list[str] = field(default_factory=list)
    custom_metrics: list[CustomJudgeMetric] = field(default_factory=list)


@dataclass
class MlflowSpec:
    resource_arn: str | None = None
    experiment_name: str | None = None
    run_name: str | None = None


@dataclass
class EvaluationSpec:
    eval_type: EvalType
    model: str
    name: str = "evaluation"
    version: int = SPEC_VERSION
    base_model: str | None = None
    evaluate_base_model: bool = False
    benchmark: str | None = None
    subtasks: list[str] | None = None
    dataset: DatasetSpec | None = None
    metrics: list[str] = field(default_factory=list)  # preset metric names (custom_scorer)
    custom_scorer_uri: str | None = None  # cloudpickled user scorer, stored beside the spec
    judge: JudgeSpec | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)
    model_package_group: str | None = None
    kms_key_id: str | None = None
    # role -> how its model argument became the reference called (runtime.model_resolution); results.json
    # records it under details.model_resolution.
    model_resolution: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> EvaluationSpec:
        """Check every field; raise SpecError naming the first bad one. Returns self."""
        if self.version != SPEC_VERSION:
            raise SpecError(f"version: unsupported spec version {self.version!r} (this evalstack reads {SPEC_VERSION})")
        if self.eval_type not in EVAL_TYPES:
            raise SpecError(f"eval_type: must be one of {list(EVAL_TYPES)}, got {self.eval_type!r}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise SpecError("model: a model reference is required")
        if not isinstance(self.model_resolution, dict) or set(self.model_resolution) - {"candidate", "base"}:
            raise SpecError("model_resolution: expected an object with 'candidate' and/or 'base' keys")
        if self.evaluate_base_model and not self.base_model and ":model-package/" not in self.model:
            raise SpecError(
                "base_model: evaluate_base_model=True needs a base model, or a model package ARN as the model "
                "whose metadata names one (evalstack:base_model)"
            )
        try:
            Hyperparameters.for_kind(self.eval_type, self.hyperparameters)
        except (AttributeError, ValueError) as err:
            raise SpecError(f"hyperparameters: {err}") from err
        getattr(self, f"_validate_{self.eval_type}")()
        return self

    def _validate_benchmark(self) -> None:
        if not self.benchmark:
            raise SpecError("benchmark: required for eval_type 'benchmark'")
        try:
            bench = resolve_benchmark(self.benchmark)
        except ValueError as err:
            raise SpecError(f"benchmark: {err}") from err
        self.benchmark = bench.value
        valid = BENCHMARKS[bench].subtasks
        if self.subtasks:
            by_key = {s.casefold(): s for s in valid}
            unknown = [s for s in self.subtasks if s.casefold() not in by_key]
            if unknown:
                shown = ", ".join(valid) if valid else "(none: this benchmark has no subtasks)"
                raise SpecError(f"subtasks: unknown {bench.value} subtask(s) {unknown}. Valid subtasks: {shown}")
            self.subtasks = [by_key[s.casefold()] for s in self.subtasks]

    def _validate_custom_scorer(self) -> None:
        if self.dataset is None or not self.dataset.uri:
            raise SpecError("dataset: required for eval_type 'custom_scorer'")
        if not self.metrics and not self.custom_scorer_uri:
            raise SpecError("metrics: name at least one preset metric or give a custom scorer")
        try:
            self.metrics = [resolve_builtin_metric(m).value for m in self.metrics]
        except ValueError as err:
            raise SpecError(f"metrics: {err}") from err

    def _validate_llm_as_judge(self) -> None:
        if self.dataset is None or not self.dataset.uri:
            raise SpecError("dataset: required for eval_type 'llm_as_judge'")
        if self.judge is None or not self.judge.evaluator_model:
            raise SpecError("judge.evaluator_model: required for eval_type 'llm_as_judge'")
        if not self.judge.builtin_metrics and not self.judge.custom_metrics:
            raise SpecError("judge: give builtin_metrics or custom_metrics")
        try:
            self.judge.builtin_metrics = [resolve_judge_metric(m).name for m in self.judge.builtin_metrics]
        except ValueError as err:
            raise SpecError(f"judge.builtin_metrics: {err}") from err
        count = len(self.judge.custom_metrics)
        if count > MAX_CUSTOM_METRICS:
            raise SpecError(f"judge.custom_metrics: at most {MAX_CUSTOM_METRICS} custom metrics, got {count}")
        for i, metric in enumerate(self.judge.custom_metrics):
            size = len(metric.prompt_template.encode("utf-8"))
            if size > MAX_PROMPT_TEMPLATE_BYTES:
                raise SpecError(
                    f"judge.custom_metrics[{i}].prompt_template: {size} bytes exceeds {MAX_PROMPT_TEMPLATE_BYTES}"
                )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Written only when a name was looked up, so specs built elsewhere (the Lambda trigger's, which
        # evaluates package ARNs as given) read and rewrite identically.
        if not data["model_resolution"]:
            del data["model_resolution"]
        return data

    def to_json(self) -> str:
        """The spec as written to spec.json: secrets masked (a label may carry a pasted key), NaN refused."""
        return json.dumps(mask_value(self.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "spec") -> EvaluationSpec:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: the spec must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{source}: unknown field(s) {unknown}")
        try:
            fields = dict(data)
            if fields.get("dataset") is not None:
                ds = dict(fields["dataset"])
                ds["columns"] = ColumnMapping(**ds.get("columns", {}))
                fields["dataset"] = DatasetSpec(**ds)
            if fields.get("judge") is not None:
                judge = dict(fields["judge"])
                judge["custom_metrics"] = [
                    CustomJudgeMetric(**{**m, "scale": tuple(m.get("scale", (1, 5)))})
                    for m in judge.get("custom_metrics", [])
                ]
                fields["judge"] = JudgeSpec(**judge)
            fields["mlflow"] = MlflowSpec(**(fields.get("mlflow") or {}))
            spec = cls(**fields)
        except (TypeError, SpecError) as err:
            raise SpecError(f"{source}: {err}") from err
        try:
            return spec.validate()
        except SpecError as err:
            raise SpecError(f"{source}: {err}") from err

    @classmethod
    def from_json(cls, text: str, source: str = "spec.json") -> EvaluationSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"{source}: line {err.lineno}: invalid JSON: {err.msg}") from err
        except RecursionError:
            raise SpecError(f"{source}: invalid JSON: nested too deeply to read") from None
        except ValueError:  # the only other ValueError json raises: Python's integer-size limit
            raise SpecError(
                f"{source}: invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
            ) from None
        return cls.from_dict(data, source)
