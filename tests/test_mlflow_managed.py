"""Logging to SageMaker managed MLflow (``mlflow_resource_arn``) through the real sagemaker-mlflow plugin,
against the loopback tracking server of tests/support/mlflow_server.py, and that server's SigV4 gate."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from evalstack.engine.run import Report
from evalstack.results.tracking import log_to_mlflow
from evalstack.results.writer import EvaluationResult
from evalstack.spec import EvaluationSpec, MlflowSpec
from tests.support.mlflow_server import (
    ARN_HEADER,
    TEST_KEY,
    TRACKING_SERVERS,
    Gate,
    ManagedMlflow,
    refusal,
    signed_requests,
)

ARN = TRACKING_SERVERS[-1]  # in eu-west-1, unlike the reference examples' servers
PACKAGE = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/summarizer/3"


def _environ(prepared: requests.PreparedRequest) -> dict[str, Any]:
    """The WSGI environ a server receives for ``prepared``."""
    url = urlsplit(prepared.url)
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body or b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": prepared.method,
        "PATH_INFO": url.path,
        "RAW_URI": url.path + (f"?{url.query}" if url.query else ""),
        "wsgi.input": io.BytesIO(body),
        "HTTP_HOST": url.netloc,
    }
    for name, value in prepared.headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return environ


def _signed(monkeypatch: pytest.MonkeyPatch, *, secret: str = TEST_KEY, region: str = "eu-west-1") -> Any:
    """A log-batch request as the plugin's own signer (AuthBoto) prepares it, with the ARN header."""
    from sagemaker_mlflow.auth import AuthBoto

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    request = requests.Request(
        "POST",
        "http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch",
        json={"run_id": "r1", "metrics": [{"key": "accuracy", "value": 0.5, "timestamp": 1, "step": 0}]},
        headers={ARN_HEADER: ARN, "Connection": "keep-alive"},
    ).prepare()
    return AuthBoto(region, "sagemaker-mlflow")(request)


GATE = Gate(TRACKING_SERVERS, TEST_KEY, TEST_KEY)


def test_gate_accepts_what_the_plugin_signs(isolated_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environ = _environ(_signed(monkeypatch))
    assert refusal(GATE, environ, environ["wsgi.input"].getvalue()) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("wrong secret", "the SigV4 signature does not match"),
        ("other region", "signed for testing/us-east-1/sagemaker-mlflow"),
        ("no ARN header", "is None, not a tracking server"),
        ("unknown ARN", "is 'arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/other', not"),
        ("altered body", "x-amz-content-sha256 does not match the body"),
        ("altered path", "the SigV4 signature does not match"),
        ("unsigned", "no SigV4 Authorization header"),
    ],
)
def test_gate_refuses(change: str, reason: str, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = _signed(
        monkeypatch,
        secret="not-the-secret" if change == "wrong secret" else TEST_KEY,
        region="us-east-1" if change == "other region" else "eu-west-1",
    )
    environ = _environ(prepared)
    body = environ["wsgi.input"].getvalue()
    if change == "no ARN header":
        del environ["HTTP_X_MLFLOW_SM_TRACKING_SERVER_ARN"]
    elif change == "unknown ARN":
        environ["HTTP_X_MLFLOW_SM_TRACKING_SERVER_ARN"] = ARN.replace("evalstack-tests", "other")
    elif change == "altered body":
        body = body.replace(b"0.5", b"0.9")
    elif change == "altered path":
        environ["RAW_URI"] = "/api/2.0/mlflow/runs/delete"
    elif change == "unsigned":
        del environ["HTTP_AUTHORIZATION"]
    found = refusal(GATE, environ, body)
    assert found is not None and reason in found


def test_the_plugin_resolves_the_arn_to_its_region_or_the_custom_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolution docs/report.md describes, by the code path MLflow 3 takes for an ARN tracking URI:
    its tracking store plugin's host credentials (SageMakerMLflowHostMetadataProvider)."""
    from mlflow.tracking._tracking_service.utils import _get_store

    monkeypatch.delenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", raising=False)
    store = _get_store(ARN)
    assert type(store).__module__ == "sagemaker_mlflow.mlflow_sagemaker_store"
    creds = store.get_host_creds()
    assert (creds.host, creds.auth) == ("https://eu-west-1.experiments.sagemaker.aws", "arn")
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", "http://127.0.0.1:5999")
    assert store.get_host_creds().host == "http://127.0.0.1:5999"


def test_mlflow_without_the_plugin_is_refused(mlflow_tracking_servers: ManagedMlflow) -> None:
    """MLflow's client pointed at the server's URL, not at the ARN, sends neither the ARN header nor a
    signature: 403, as SageMaker answers."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with pytest.raises(MlflowException, match=rf"PERMISSION_DENIED: {ARN_HEADER} is None, not a tracking server"):
        MlflowClient(mlflow_tracking_servers.endpoint).get_experiment_by_name("anything")


@pytest.mark.parametrize("own", [None, "own.db"], ids=["no tracking uri", "a tracking uri of its own"])
def test_log_to_mlflow_with_an_arn(
    own: str | None, managed_mlflow: ManagedMlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run goes to the ARN's server, signed; the process's own MLflow settings are as before."""
    import mlflow
    from mlflow.tracking import MlflowClient

    own_uri = f"sqlite:///{tmp_path / own}" if own else None
    if own_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", own_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    output = tmp_path / "out" / "exec-1"
    output.mkdir(parents=True)
    (output / "results.json").write_text(json.dumps({"metrics": {"rougeL": 0.25}}))
    (output / "report.md").write_text("# report\n")
    spec = EvaluationSpec(
        eval_type="custom_scorer",
        model=PACKAGE,
        metrics=["rouge"],
        mlflow=MlflowSpec(resource_arn=ARN, experiment_name="summaries", run_name="v3"),
    )
    candidate = EvaluationResult(
        eval_type="custom_scorer",
        name="e",
        model=PACKAGE,
        role="candidate",
        num_samples=4,
        metrics={"rougeL": 0.25},
        dataset_sha256="0" * 64,
    )
    try:
        tracked = log_to_mlflow(spec, Report(candidate), str(output))
        assert mlflow.get_tracking_uri() == before
        assert os.environ.get("MLFLOW_TRACKING_URI") == own_uri
    finally:
        mlflow.set_tracking_uri(None)  # forget the global the call restored, for the tests after this one
    assert not (tmp_path / "own.db").exists()

    assert tracked.tracking_uri == ARN
    for request in signed_requests(managed_mlflow, ARN):
        assert "/eu-west-1/sagemaker-mlflow/aws4_request, " in request["authorization"]
    client = MlflowClient(managed_mlflow.store_uri)
    run = client.get_run(tracked.run_id)
    assert run.info.run_name == "v3" and run.info.status == "FINISHED"
    assert client.get_experiment(tracked.experiment_id).name == "summaries"
    assert run.data.metrics == {"rougeL": 0.25, "num_samples": 4.0}
    assert [m.step for m in client.get_metric_history(tracked.run_id, "rougeL")] == [3]  # the package version
    assert run.data.params["model"] == PACKAGE and run.data.params["metrics"] == "rouge"
    assert sorted(a.path for a in client.list_artifacts(tracked.run_id)) == ["report.md", "results.json"]
    assert run.info.artifact_uri.startswith(managed_mlflow.artifact_root + "/")
    logged = client.download_artifacts(tracked.run_id, "report.md", str(tmp_path))
    assert Path(logged).read_text() == "# report\n"
