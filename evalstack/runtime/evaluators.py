"""The three evaluators of the reference API. Each validates its arguments, builds one
EvaluationSpec and hands it to :func:`evalstack.runtime.launch.start_evaluation`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalstack import storage
from evalstack.catalog import BuiltInMetric, resolve_benchmark, resolve_builtin_metric
from evalstack.catalog.benchmarks import BENCHMARKS, Benchmark
from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.runtime.backend import boto_session, resolve_backend
from evalstack.runtime.execution import EvaluationPipelineExecution
from evalstack.spec import (
    ColumnMapping,
    CustomJudgeMetric,
    DatasetSpec,
    EvaluationSpec,
    JudgeSpec,
    MlflowSpec,
    SpecError,
)

# What builds and runs an evaluation (the model layer, the task engine, the checks and the launcher) is
# imported by the methods that use it: importing the public API loads the class definitions only.
if TYPE_CHECKING:
    from evalstack.runtime.launch import Attachment
    from evalstack.runtime.model_resolution import AwsLookup, Resolution


@dataclass(frozen=True)
class VpcConfig:
    """Network settings for the Processing jobs (SageMaker's VpcConfig)."""

    subnets: tuple[str, ...]
    security_group_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.subnets or not self.security_group_ids:
            raise ValueError("networking: VpcConfig needs at least one subnet and one security group id")


@dataclass(frozen=True)
class DryRun:
    """What ``evaluate(dry_run=True)`` returns: the validated spec and the pipeline definition that
    would run it. Nothing was written and no model was called."""

    spec: dict[str, Any]
    pipeline_definition: dict[str, Any]
    eval_type: str


def _subtask_list(value: Any, what: str) -> list[str] | None:
    """A subtask name, a list of them, or "ALL" (every subtask) -> a list, or None for all."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what}: expected a subtask name, a list of names or 'ALL', got {value!r}")
    if any(n.strip().upper() == "ALL" for n in names):
        return None
    return list(names) or None


def _name_of(value: Any, what: str) -> str | None:
    """Model, package group and dataset arguments accept a string or an object with a name/ARN."""
    if value is None or isinstance(value, str):
        return value
    for attr in ("arn", "model_package_arn", "model_package_group_name", "name", "uri", "s3_uri"):
        found = getattr(value, attr, None)
        if isinstance(found, str) and found:
            return found
    raise ValueError(f"{what}: expected a string or an object with a name or ARN, got {type(value).__name__}")


class _Evaluator:
    eval_type: str = ""
    # A benchmark always asks the model; a dataset evaluator asks it only when the dataset lacks responses.
    always_calls_model: bool = False

    def __init__(
        self,
        *,
        model: Any,
        evaluate_base_model: bool = False,
        base_model: str | None = None,
        s3_output_path: str | None = None,
        region: str | None = None,
        sagemaker_session: Any = None,
        base_eval_name: str | None = None,
        mlflow_resource_arn: str | None = None,
        mlflow_experiment_name: str | None = None,
        mlflow_run_name: str | None = None,
        networking: VpcConfig | None = None,
        kms_key_id: str | None = None,
        model_package_group: Any = None,
        instance_count: int | None = None,
        instance_type: str | None = None,
    ) -> None:
        from evalstack.models.reference import parse_model_reference
        from evalstack.runtime.preflight import check_mlflow_arn

        self.model = _name_of(model, "model")
        if not self.model:
            raise ValueError("model: a model reference is required (see docs/models.md for the formats)")
        self.model_reference = parse_model_reference(self.model)
        if base_model is not None:
            parse_model_reference(base_model)
        check_mlflow_arn(mlflow_resource_arn)
        if not isinstance(evaluate_base_model, bool):
            raise ValueError(f"evaluate_base_model: must be a bool, got {evaluate_base_model!r}")
        if networking is not None and not isinstance(networking, VpcConfig):
            raise ValueError("networking: expected an evalstack VpcConfig")
        self.evaluate_base_model = evaluate_base_model
        self.base_model = base_model
        self.s3_output_path = storage.absolute(s3_output_path) if s3_output_path else None
        self.region = region
        self.sagemaker_session = sagemaker_session
        self.base_eval_name = base_eval_name or f"{self.eval_type.replace('_', '-')}-eval"
        self.mlflow = MlflowSpec(mlflow_resource_arn, mlflow_experiment_name, mlflow_run_name)
        self.networking = networking
        self.kms_key_id = kms_key_id
        self.model_package_group = _name_of(model_package_group, "model_package_group")
        if instance_count is not None and (
            isinstance(instance_count, bool) or not isinstance(instance_count, int) or instance_count < 1
        ):
            raise ValueError(f"instance_count: must be a positive integer, got {instance_count!r}")
        # evalstack extensions: shard the evaluation over this many Processing instances.
        self.instance_count = instance_count
        self.instance_type = instance_type
        self.hyperparameters = Hyperparameters.for_kind(self.eval_type)
        # How the model arguments became the references that are called (recorded in results.json).
        self.model_resolution: dict[str, Resolution] = {}
        self._aws: AwsLookup | None = None

    def _resolve_models(self) -> None:
        """Resolve the model arguments, last in each constructor (after the cheap checks): the
        candidate when it is certainly called or already names its backend, and the base model."""
        if self.always_calls_model or not self.model_reference.is_label:
            self._resolve_candidate()
        elif self.evaluate_base_model and self.base_model is None:
            # The label must name a model package (or group) whose lineage names the base.
            try:
                self._resolve_candidate()
            except ValueError as err:
                raise ValueError(
                    "base_model: evaluate_base_model=True needs a base model, or a model package ARN (or group) as "
                    f"the model, whose lineage names one; {err}"
                ) from err
        if self.evaluate_base_model:
            self._resolve_base()

    def _aws_lookup(self) -> AwsLookup:
        """The caller's session and region for name lookups; made on the first lookup only, so an
        evaluation that resolves nothing never needs AWS credentials."""
        if self._aws is None:
            from evalstack.runtime.model_resolution import AwsLookup

            session = boto_session(self.sagemaker_session, self.region)
            region = self.region or getattr(session, "region_name", None)
            self._aws = AwsLookup(session, region, getattr(self.sagemaker_session, "sagemaker_client", None))
        return self._aws

    def _resolve_candidate(self) -> None:
        from evalstack.runtime.model_resolution import resolve_model

        self.model_resolution["candidate"] = resolve_model(self.model, self._aws_lookup, "model")

    def _resolve_base(self) -> None:
        from evalstack.runtime.model_resolution import resolve_base_model, resolve_model

        if self.base_model is not None:
            self.model_resolution["base"] = resolve_model(self.base_model, self._aws_lookup, "base_model")
        else:
            self.model_resolution["base"] = resolve_base_model(self.model_resolution["candidate"], self._aws_lookup)

    def _resolved(self, role: str, given: str | None) -> str | None:
        found = self.model_resolution.get(role)
        return found.reference if found else given

    def _recorded(self) -> dict[str, dict[str, Any]]:
        return {role: found.to_dict() for role, found in self.model_resolution.items()}

    def _spec(self, **fields: Any) -> EvaluationSpec:
        spec = EvaluationSpec(
            eval_type=self.eval_type,  # type: ignore[arg-type]
            model=self._resolved("candidate", self.model) or self.model,
            name=self.base_eval_name,
            base_model=self._resolved("base", self.base_model),
            evaluate_base_model=self.evaluate_base_model,
            model_resolution=self._recorded(),
            hyperparameters=self.hyperparameters.to_dict(),
            mlflow=self.mlflow,
            model_package_group=self.model_package_group,
            kms_key_id=self.kms_key_id,
            **fields,
        )
        try:
            return spec.validate()
        except SpecError as err:
            raise ValueError(str(err)) from err

    def _resolve_when_called(self, spec: EvaluationSpec) -> EvaluationSpec:
        """A bare name left unresolved because the dataset might carry every response: resolved now
        if it does not (a label-only run never looks anything up)."""
        from evalstack.engine.tasks import build_task
        from evalstack.runtime.preflight import missing_response

        if "candidate" in self.model_resolution:
            return spec
        task = build_task(spec, "candidate")
        if not task.needs_model:
            return spec
        try:
            self._resolve_candidate()
        except ValueError as err:
            # Responses under another field name are likelier than a model of that name: point at columns=.
            mapping = missing_response(spec, task.items(), self.model_reference, near_miss_only=True)
            if mapping is None:
                raise
            raise ValueError(f"{mapping} (looked up as a model name, {self.model!r} names nothing)") from err
        resolved = self.model_resolution["candidate"].reference
        return dataclasses.replace(spec, model=resolved, model_resolution=self._recorded())

    def _dry_run(self, spec: EvaluationSpec) -> DryRun:
        from evalstack.runtime.launch import local_definition
        from evalstack.runtime.preflight import preflight

        spec = self._resolve_when_called(spec)
        preflight(spec, region=self.region, reach=False, aws=self._aws_lookup)
        return DryRun(spec.to_dict(), local_definition(spec, self.networking), spec.eval_type)

    def _start(self, spec: EvaluationSpec, attachments: Sequence[Attachment] = ()) -> EvaluationPipelineExecution:
        from evalstack.runtime.launch import start_evaluation
        from evalstack.runtime.preflight import preflight

        spec = self._resolve_when_called(spec)
        # A missing deployment is named before any model is asked (pipeline_name raises).
        backend = resolve_backend(self.sagemaker_session, self.region)
        backend.pipeline_name(spec.eval_type)
        preflight(spec, region=self.region, aws=self._aws_lookup, local=backend.is_local)
        return start_evaluation(
            spec,
            s3_output_path=self.s3_output_path,
            attachments=attachments,
            region=self.region,
            session=self.sagemaker_session,
            networking=self.networking,
            instance_count=self.instance_count,
            instance_type=self.instance_type,
        )


def _dataset(dataset: Any, columns: dict[str, str] | None) -> DatasetSpec:
    """A URI/path (with optional column mapping) or a ready DatasetSpec."""
    if isinstance(dataset, DatasetSpec):
        if columns:
            raise ValueError("columns: give the column mapping inside the DatasetSpec, not both")
        return dataclasses.replace(dataset, uri=storage.absolute(dataset.uri)) if dataset.uri else dataset
    uri = _name_of(dataset, "dataset")
    if not uri:
        raise ValueError("dataset: a dataset URI or path is required")
    try:
        mapping = ColumnMapping(**(columns or {}))
    except TypeError as err:
        raise ValueError(f"columns: {err}; valid keys: prompt, response, reference, context") from err
    return DatasetSpec(uri=storage.absolute(uri), columns=mapping)


class BenchMarkEvaluator(_Evaluator):
    """Standard benchmark evaluations (MMLU, BBH, MATH, GSM8K, ...)."""

    eval_type = "benchmark"
    always_calls_model = True

    def __init__(self, benchmark: Benchmark | str, *, subtasks: str | list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.benchmark = resolve_benchmark(benchmark)
        self.subtasks = _subtask_list(subtasks, "subtasks")
        self._resolve_models()
        self._spec(benchmark=self.benchmark.value, subtasks=self.subtasks)  # fail fast on bad subtasks

    @classmethod
    def get_all(cls, session: Any = None, region: Any = None) -> list[str]:
        return [b.value for b in BENCHMARKS]

    def evaluate(
        self, subtask: str | list[str] | None = None, *, dry_run: bool = False
    ) -> EvaluationPipelineExecution | DryRun:
        """Start the evaluation (``subtask``: one name, a list or "ALL" overrides ``subtasks``).
        ``dry_run=True`` checks everything and returns the spec and pipeline definition instead."""
        subtasks = self.subtasks if subtask is None else _subtask_list(subtask, "subtask")
        spec = self._spec(benchmark=self.benchmark.value, subtasks=subtasks)
        return self._dry_run(spec) if dry_run else self._start(spec)


class CustomScorerEvaluator(_Evaluator):
    """Preset metrics (one or several) or a user scorer over a dataset."""

    eval_type = "custom_scorer"

    def __init__(self, evaluator: Any, dataset: Any, *, columns: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataset = _dataset(dataset, columns)
        self.metrics, self.scorer = self._split_evaluator(evaluator)
        self._resolve_models()

    @staticmethod
    def _split_evaluator(evaluator: Any) -> tuple[list[str], Any]:
        if isinstance(evaluator, str | BuiltInMetric):
            return [resolve_builtin_metric(evaluator).value], None
        if isinstance(evaluator, list | tuple) and evaluator and all(isinstance(e, str) for e in evaluator):
            return [resolve_builtin_metric(e).value for e in evaluator], None
        if callable(getattr(evaluator, "score", None)):
            return [], evaluator
        raise ValueError(
            "evaluator: expected a preset metric name "
            f"({', '.join(m.value for m in BuiltInMetric)}), a list of them, or an object with a "
            "score(predictions, ground_truth, metadata=None) method"
        )

    def evaluate(self, *, dry_run: bool = False) -> EvaluationPipelineExecution | DryRun:
        """Start the evaluation; ``dry_run=True`` checks everything and returns the spec and definition."""
        from evalstack.metrics.custom import dump_scorer
        from evalstack.runtime.launch import Attachment

        attachments: list[Attachment] = []
        if self.scorer is not None:
            attachments.append(Attachment("scorer.pkl", dump_scorer(self.scorer), "custom_scorer_uri"))
        spec = self._spec(
            dataset=self.dataset, metrics=self.metrics, custom_scorer_uri="pending" if attachments else None
        )
        return self._dry_run(spec) if dry_run else self._start(spec, attachments)


class LLMAsJudgeEvaluator(_Evaluator):
    """LLM-as-judge with built-in and custom judge metrics."""

    eval_type = "llm_as_judge"

    def __init__(
        self,
        evaluator_model: Any,
        dataset: Any,
        *,
        builtin_metrics: list[str] | None = None,
        custom_metrics: list[dict[str, Any] | CustomJudgeMetric] | None = None,
        columns: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        # The judge (its rubrics, parsing and statistics) loads for judge evaluations only.
        from evalstack.judge.custom import validate_custom_metrics
        from evalstack.judge.task import judge_reference

        super().__init__(**kwargs)
        judge_model = _name_of(evaluator_model, "evaluator_model")
        if not judge_model:
            raise ValueError("evaluator_model: a judge model is required (e.g. a Bedrock model ID)")
        self.dataset = _dataset(dataset, columns)
        judge_reference(judge_model)
        metrics = [self._custom_metric(i, m) for i, m in enumerate(custom_metrics or [])]
        validate_custom_metrics(metrics)
        self.judge = JudgeSpec(judge_model, list(builtin_metrics or []), metrics)
        self._resolve_models()
        self._spec(dataset=self.dataset, judge=self.judge)

    @staticmethod
    def _custom_metric(index: int, metric: dict[str, Any] | CustomJudgeMetric) -> CustomJudgeMetric:
        if isinstance(metric, CustomJudgeMetric):
            return metric
        if not isinstance(metric, dict):
            raise ValueError(f"custom_metrics[{index}]: expected a dict with name, description, prompt_template")
        try:
            return CustomJudgeMetric(**{**metric, "scale": tuple(metric.get("scale", (1, 5)))})
        except TypeError as err:
            raise ValueError(f"custom_metrics[{index}]: {err}") from err

    def evaluate(self, *, dry_run: bool = False) -> EvaluationPipelineExecution | DryRun:
        """Start the evaluation; ``dry_run=True`` checks everything and returns the spec and definition."""
        spec = self._spec(dataset=self.dataset, judge=self.judge)
        return self._dry_run(spec) if dry_run else self._start(spec)
