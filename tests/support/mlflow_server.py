"""A loopback stand-in for a SageMaker managed MLflow tracking server.

It is MLflow's own tracking server (the Flask app of ``mlflow.server``, in mlflow-skinny) over a
SqlAlchemyStore in SQLite, with its default artifact root in S3 (moto), as SageMaker runs it. In front
of it sits a gate that does what SageMaker's front end does before a request reaches MLflow: it
answers 403 unless the request carries, in ``x-mlflow-sm-tracking-server-arn``, the ARN of one of the
tracking servers it hosts and a valid SigV4 signature for service ``sagemaker-mlflow`` in that ARN's
region, checked with botocore against the (dummy) credentials the test gives. Every request is recorded
with the gate's verdict, so tests can assert what the client sent.

The server runs in a subprocess: opening its store sets MLflow's process-wide tracking URI (and the
``MLFLOW_TRACKING_URI`` variable), which must not leak into the tests or the step processes they start.
The client under test (the ``sagemaker-mlflow`` plugin) reaches it through
``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

ARN_HEADER = "x-mlflow-sm-tracking-server-arn"
TEST_KEY = "testing"  # the access key id and secret of tests/conftest.py's ``aws`` fixture
# The tracking servers the loopback server hosts: those of the reference's examples, and one for tests.
TRACKING_SERVERS = (
    "arn:aws:sagemaker:us-west-2:123:mlflow-tracking-server/my-server",
    "arn:aws:sagemaker:us-west-2:123:mlflow-tracking-server/server",
    "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/evalstack-tests",
)
SERVICE = "sagemaker-mlflow"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class Gate:
    """What a request must carry to reach MLflow: one of ``arns``, signed with these credentials."""

    arns: tuple[str, ...]
    access_key: str
    secret_key: str


def _environ_header(environ: dict[str, Any], name: str) -> str | None:
    if name in ("content-type", "content-length"):
        return environ.get(name.upper().replace("-", "_"))
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def refusal(gate: Gate, environ: dict[str, Any], body: bytes) -> str | None:
    """Why the gate refuses this request, or None when it carries the ARN header and a valid signature."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    arn = _environ_header(environ, ARN_HEADER)
    if arn not in gate.arns:
        return f"{ARN_HEADER} is {arn!r}, not a tracking server of {gate.arns}"
    region = arn.split(":")[3]
    match = _AUTHORIZATION.fullmatch(_environ_header(environ, "authorization") or "")
    if match is None:
        return "no SigV4 Authorization header"
    if (match["key"], match["region"], match["service"]) != (gate.access_key, region, SERVICE):
        return f"signed for {match['key']}/{match['region']}/{match['service']}"
    if _environ_header(environ, "x-amz-content-sha256") != sha256(body).hexdigest():
        return "x-amz-content-sha256 does not match the body"
    signed = match["signed"].split(";")
    if ARN_HEADER not in signed or "x-amz-date" not in signed:
        return f"the signature does not cover {ARN_HEADER} and x-amz-date"
    headers = {name: _environ_header(environ, name) or "" for name in signed}
    url = f"http://{headers['host']}{environ['RAW_URI']}"
    request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, data=body, headers=headers)
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(gate.access_key, gate.secret_key), SERVICE, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return None if expected == match["signature"] else "the SigV4 signature does not match"


def gated(app: Any, gate: Gate, log: Path) -> Any:
    """``app`` behind the gate, recording each request (one JSON line) in ``log``."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        reason = refusal(gate, environ, body)
        record = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "arn": _environ_header(environ, ARN_HEADER),
            "authorization": _environ_header(environ, "authorization"),
            "refused": reason,
        }
        with log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if reason is not None:
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [json.dumps({"error_code": "PERMISSION_DENIED", "message": reason}).encode()]
        return app(environ, start_response)

    return wsgi


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    for name in ("backend-store-uri", "artifact-root", "access-key", "secret-key", "log"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--arn", action="append", required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)

    from mlflow.server import app, handlers
    from werkzeug.serving import make_server

    handlers._get_tracking_store(args.backend_store_uri, args.artifact_root)
    gate = Gate(tuple(args.arn), args.access_key, args.secret_key)
    make_server("127.0.0.1", 0, gated(app, gate, Path(args.log)), threaded=True, fd=args.fd).serve_forever()


@dataclass(frozen=True)
class ManagedMlflow:
    endpoint: str
    store_uri: str  # the server's SQLite store, to read back what was logged with MLflow's own client
    artifact_root: str
    log: Path

    def requests(self, arn: str) -> list[dict[str, Any]]:
        """The requests that named ``arn`` in their ARN header, with the gate's verdict."""
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]
        return [r for r in records if r["arn"] == arn]


@contextmanager
def start(root: Path, gate: Gate, artifact_root: str) -> Iterator[ManagedMlflow]:
    """Start the server (store and request log under ``root``) and yield where it listens.

    The socket listens before the server has imported MLflow and migrated its store (seconds), and
    connections wait in its backlog meanwhile: the caller goes on at once, and an evaluation's model
    steps run while the server boots. Only the server keeps the socket, so if it dies, clients are
    refused instead of hanging."""
    root.mkdir(parents=True, exist_ok=True)
    store_uri = f"sqlite:///{root / 'mlflow.db'}"
    log = root / "requests.jsonl"
    listener = socket.create_server(("127.0.0.1", 0))
    command = [sys.executable, "-m", "tests.support.mlflow_server", "--fd", str(listener.fileno())]
    for name, value in (
        ("backend-store-uri", store_uri),
        ("artifact-root", artifact_root),
        ("access-key", gate.access_key),
        ("secret-key", gate.secret_key),
        ("log", str(log)),
        *(("arn", arn) for arn in gate.arns),
    ):
        command += [f"--{name}", value]
    with listener, (root / "server.log").open("wb") as output:
        process = subprocess.Popen(
            command, pass_fds=[listener.fileno()], cwd=Path(__file__).parents[2], stdout=output, stderr=output
        )
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        yield ManagedMlflow(endpoint, store_uri, artifact_root, log)
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def hosting(arns: tuple[str, ...], root: Path, moto_endpoint: str) -> Iterator[ManagedMlflow]:
    """The server for these tracking server ARNs, with its artifact store a new bucket of the moto
    server, signed for with the ``aws`` fixture's dummy credentials."""
    import boto3

    bucket = f"sagemaker-mlflow-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=TEST_KEY,
        aws_secret_access_key=TEST_KEY,
    )
    s3.create_bucket(Bucket=bucket)
    with start(root, Gate(arns, TEST_KEY, TEST_KEY), f"s3://{bucket}/artifacts") as server:
        yield server


def signed_requests(server: ManagedMlflow, arn: str) -> list[dict[str, Any]]:
    """The requests for ``arn``, after checking there were some and the gate accepted every one."""
    requests = server.requests(arn)
    assert requests, f"no request reached the tracking server {arn} (its log: {server.log.parent / 'server.log'})"
    refused = [(r["method"], r["path"], r["refused"]) for r in requests if r["refused"] is not None]
    assert not refused, refused
    return requests


if __name__ == "__main__":
    main(sys.argv[1:])
