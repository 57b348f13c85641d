"""Session-wide test settings: an isolated EVALSTACK_HOME and no ambient AWS credentials."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_DATA = Path(os.environ.get("EVALSTACK_BENCHMARK_DATA", REPO_ROOT.parent / "shared" / "benchmarks"))
EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own EVALSTACK_HOME, and boto3 finds no credentials unless a test gives some
    (so s3:// maps to the local object folder by default, and nothing can reach a real account)."""
    home = tmp_path / "evalstack-home"
    monkeypatch.setenv("EVALSTACK_HOME", str(home))
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "EVALSTACK_S3",
        "EVALSTACK_CACHE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def benchmark_data() -> Path:
    if not (BENCHMARK_DATA / "MANIFEST.md").is_file():
        raise RuntimeError(f"benchmark data not found at {BENCHMARK_DATA}; set EVALSTACK_BENCHMARK_DATA")
    return BENCHMARK_DATA


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server in server mode on loopback for the whole session (real HTTP, real botocore)."""
    from tests.support.aws import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and so evalstack.storage's s3://) at the moto server with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return moto_endpoint
