"""Log an evaluation to MLflow: params, metrics and the result files as artifacts.

The Report step calls :func:`log_to_mlflow` when the spec asks for tracking (any of
``mlflow_resource_arn``, ``mlflow_experiment_name``, ``mlflow_run_name``). Where the run goes:

- ``mlflow_resource_arn``: SageMaker managed MLflow; the ARN is the tracking URI, which the
  ``sagemaker-mlflow`` plugin (extra ``evalstack[sagemaker-mlflow]``) resolves to
  ``https://<region>.experiments.sagemaker.aws`` (or ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT`` when set) and
  signs with SigV4 (service ``sagemaker-mlflow``, boto3's credentials); artifacts go to the tracking
  server's artifact store in S3, written with boto3's credentials;
- else ``MLFLOW_TRACKING_URI`` when set;
- else a local SQLite store, ``$EVALSTACK_HOME/mlflow/mlflow.db``, with artifacts beside it
  (MLflow's file store is in maintenance mode; SQLite is its recommended local backend).

Experiment and run names are as given; by default the experiment is the evaluation's name and the
run is named after the execution's output folder (the pipeline execution id).

Metrics (headline, base, improvement and per subtask, ``subtask/<name>/<metric>``) are logged at
step = the model package version when the model is a versioned model package ARN, else step 0, so
MLflow's charts over steps show a model package group's versions in order. ``report.html`` is
logged with the other result files.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalstack import storage

if TYPE_CHECKING:
    from evalstack.engine.run import Report
    from evalstack.spec import EvaluationSpec

ARTIFACTS = ("results.json", "report.md", "report.html", "comparison.json", "base/results.json", "spec.json")
_PACKAGE_VERSION = re.compile(r":model-package/[^/]+/(\d+)$")


@dataclass(frozen=True)
class TrackedRun:
    tracking_uri: str
    experiment_id: str
    run_id: str


def wants_tracking(spec: EvaluationSpec) -> bool:
    m = spec.mlflow
    return bool(m.resource_arn or m.experiment_name or m.run_name)


def local_tracking_root() -> Path:
    return storage.evalstack_home() / "mlflow"


def check_mlflow_plugin(resource_arn: str | None) -> None:
    """A SageMaker MLflow ARN needs the sagemaker-mlflow plugin where the Report step runs."""
    if resource_arn and importlib.util.find_spec("sagemaker_mlflow") is None:
        raise ValueError(
            "mlflow_resource_arn: logging to SageMaker managed MLflow needs the sagemaker-mlflow plugin "
            "(pip install 'evalstack[sagemaker-mlflow]')"
        )


def tracking_uri(spec: EvaluationSpec) -> str:
    if spec.mlflow.resource_arn:
        check_mlflow_plugin(spec.mlflow.resource_arn)
        return spec.mlflow.resource_arn
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = local_tracking_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _numbers(prefix: str, values: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """Finite numbers of a nested mapping, keyed by their path ("base/accuracy")."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _numbers(f"{name}/", value)
        elif isinstance(value, bool | int | float) and math.isfinite(float(value)):
            yield name, float(value)


def run_metrics(report: Report) -> dict[str, float]:
    summary = report.summary()
    out = dict(_numbers("", summary.get("metrics", {})))
    out["num_samples"] = float(report.candidate.num_samples)
    for key in ("base_metrics", "improvement"):
        out.update(_numbers(f"{key.removesuffix('_metrics')}/", summary.get(key, {})))
    if "significant_regression" in summary:
        out["significant_regression"] = float(summary["significant_regression"])
    out.update(_numbers("subtask/", report.candidate.subtasks))
    return out


def model_version(model: str) -> int | None:
    """The version of a model package ARN (``...:model-package/<group>/<version>``), else None."""
    match = _PACKAGE_VERSION.search(model)
    return int(match.group(1)) if match else None


def run_params(spec: EvaluationSpec, output_uri: str) -> dict[str, str]:
    params: dict[str, Any] = {
        "eval_type": spec.eval_type,
        "evaluation_name": spec.name,
        "model": spec.model,
        "base_model": spec.base_model if spec.evaluate_base_model else None,
        "benchmark": spec.benchmark,
        "subtasks": ",".join(spec.subtasks) if spec.subtasks else None,
        "dataset": spec.dataset.uri if spec.dataset else None,
        "metrics": ",".join(spec.metrics) if spec.metrics else None,
        "judge_model": spec.judge.evaluator_model if spec.judge else None,
        "output_uri": output_uri,
        **{f"hp/{k}": v for k, v in sorted(spec.hyperparameters.items())},
    }
    return {k: str(v) for k, v in params.items() if v is not None}


def _experiment_id(client: Any, name: str, artifact_root: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (artifact_root / name).as_uri() if artifact_root is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Created by a concurrent Report step in the meantime.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Make ``uri`` MLflow's process-wide tracking URI for the block, then restore the previous one.

    The sagemaker-mlflow plugin signs each request and names the tracking server in its
    ``x-mlflow-sm-tracking-server-arn`` header from ``mlflow.get_tracking_uri()``, not from the
    client's URI: without this, a client given the ARN sends unsigned requests.
    """
    import mlflow

    variable = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        # set_tracking_uri also exports MLFLOW_TRACKING_URI; put the caller's value (or its absence) back.
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def log_to_mlflow(spec: EvaluationSpec, report: Report, output_uri: str) -> TrackedRun:
    """One MLflow run for this evaluation: params, metrics, and the result files as artifacts."""
    uri = tracking_uri(spec)
    if spec.mlflow.resource_arn:
        with _global_tracking_uri(uri):
            return _log_run(uri, spec, report, output_uri)
    return _log_run(uri, spec, report, output_uri)


def _log_run(uri: str, spec: EvaluationSpec, report: Report, output_uri: str) -> TrackedRun:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    local = uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI")
    experiment = _experiment_id(
        client, spec.mlflow.experiment_name or spec.name, local_tracking_root() / "artifacts" if local else None
    )
    run_name = spec.mlflow.run_name or output_uri.rstrip("/").rsplit("/", 1)[-1]
    run = client.create_run(experiment, run_name=run_name, tags={"evalstack.output_uri": output_uri})
    run_id = run.info.run_id
    try:
        stamp = run.info.start_time
        step = model_version(spec.model) or 0
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, stamp, step) for k, v in sorted(run_metrics(report).items())],
            params=[Param(k, v) for k, v in run_params(spec, output_uri).items()],
        )
        for name in ARTIFACTS:
            uri_of = storage.join(output_uri, name)
            if storage.exists(uri_of):
                client.log_text(run_id, storage.read_text(uri_of), name)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return TrackedRun(uri, experiment, run_id)
