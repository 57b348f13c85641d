"""The Report step logs the evaluation to MLflow (local SQLite store under EVALSTACK_HOME)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from evalstack.evaluate import CustomScorerEvaluator
from evalstack.results.tracking import tracking_uri
from evalstack.spec import EvaluationSpec, MlflowSpec
from tests.conftest import EXAMPLES

DATASET = EXAMPLES / "truthfulqa_answers.jsonl"


def test_report_step_logs_params_metrics_and_artifacts(isolated_environment: Path, tmp_path: Path) -> None:
    evaluator = CustomScorerEvaluator(
        evaluator="rouge",
        dataset=str(DATASET),
        model="listed-answers",
        s3_output_path=str(tmp_path / "out"),
        mlflow_experiment_name="llm-evaluation",
        mlflow_run_name="rouge-v1",
    )
    execution = evaluator.evaluate()
    execution.wait(poll=2)
    results = execution.results()

    client = MlflowClient(f"sqlite:///{isolated_environment / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("llm-evaluation")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "rouge-v1"
    assert run.info.status == "FINISHED"
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert run.data.metrics[name] == pytest.approx(results["metrics"][name], abs=1e-12)
    assert run.data.metrics["num_samples"] == 40
    assert run.data.params["eval_type"] == "custom_scorer"
    assert run.data.params["model"] == "listed-answers"
    assert run.data.params["metrics"] == "rouge"
    assert run.data.params["dataset"] == str(DATASET)
    assert run.data.params["output_uri"] == execution.s3_output_path
    assert run.data.tags["evalstack.output_uri"] == execution.s3_output_path
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert artifacts == ["report.html", "report.md", "results.json", "spec.json"]
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "results.json", str(tmp_path))).read_text())
    assert logged == json.loads((Path(execution.s3_output_path) / "results.json").read_text())
    # Artifacts stay under EVALSTACK_HOME, not in the working directory.
    assert experiment.artifact_location.startswith((isolated_environment / "mlflow" / "artifacts").as_uri())


def test_managed_mlflow_needs_the_sagemaker_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dev extra installs the plugin; a None entry in sys.modules is how Python marks a module
    # unimportable, so find_spec reports it missing as it would be without the extra.
    assert importlib.util.find_spec("sagemaker_mlflow") is not None
    monkeypatch.setitem(sys.modules, "sagemaker_mlflow", None)
    arn = "arn:aws:sagemaker:us-west-2:123456789012:mlflow-tracking-server/my-server"
    spec = EvaluationSpec(eval_type="custom_scorer", model="m", mlflow=MlflowSpec(resource_arn=arn))
    with pytest.raises(
        ValueError, match=r"needs the sagemaker-mlflow plugin \(pip install 'evalstack\[sagemaker-mlflow\]'\)"
    ):
        tracking_uri(spec)
