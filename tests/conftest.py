"""Session-wide test settings: an isolated EVALSTACK_HOME, no ambient AWS credentials, and the benchmark data root."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The small in-repo cut of every benchmark (see its MANIFEST.md); EVALSTACK_BENCHMARK_DATA, when set,
# names a full data root laid out the same way (e.g. ../shared/benchmarks) and enables the full_data tests.
FIXTURE_DATA = REPO_ROOT / "tests" / "fixtures" / "benchmarks"
FULL_DATA = os.environ.get("EVALSTACK_BENCHMARK_DATA") or None
BENCHMARK_DATA = Path(FULL_DATA).resolve() if FULL_DATA else FIXTURE_DATA  # absolute: steps run elsewhere
FULL_DATA_REASON = "needs the full benchmark data: set EVALSTACK_BENCHMARK_DATA to its root (e.g. ../shared/benchmarks)"
EXAMPLES = REPO_ROOT / "examples"
TRUTHFULQA_QUESTIONS = 12


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"full_data: {FULL_DATA_REASON}; skipped without it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL_DATA:
        return
    skip = pytest.mark.skip(reason=FULL_DATA_REASON)
    for item in items:
        if "full_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One XDG cache folder per test session (the local client's service-model cache), never the user's."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path) -> Path:
    """Each test gets its own EVALSTACK_HOME, and boto3 finds no credentials unless a test gives some
    (so s3:// maps to the local object folder by default, and nothing can reach a real account)."""
    home = tmp_path / "evalstack-home"
    monkeypatch.setenv("EVALSTACK_HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
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
    # Benchmark tasks (and the step subprocesses they start) read the same root as the tests.
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", str(BENCHMARK_DATA))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def benchmark_data() -> Path:
    """The full data root named by EVALSTACK_BENCHMARK_DATA, else the in-repo fixtures."""
    if not (BENCHMARK_DATA / "MANIFEST.md").is_file():
        raise RuntimeError(f"EVALSTACK_BENCHMARK_DATA={FULL_DATA}: no MANIFEST.md there, so not a benchmark data root")
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


@pytest.fixture(scope="session")
def mlflow_tracking_servers(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory):
    """SageMaker managed MLflow on loopback (tests/support/mlflow_server.py), booted once per session."""
    from tests.support.mlflow_server import TRACKING_SERVERS, hosting

    with hosting(TRACKING_SERVERS, tmp_path_factory.mktemp("mlflow"), moto_endpoint) as server:
        yield server


@pytest.fixture
def managed_mlflow(aws: str, mlflow_tracking_servers, monkeypatch: pytest.MonkeyPatch):
    """The sagemaker-mlflow plugin resolves TRACKING_SERVERS' ARNs to that server (step processes inherit it)."""
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", mlflow_tracking_servers.endpoint)
    return mlflow_tracking_servers


@pytest.fixture
def questions(benchmark_data: Path) -> list[dict[str, str]]:
    """The first TruthfulQA questions with their best answer and one listed wrong answer."""
    with open(benchmark_data / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))[:TRUTHFULQA_QUESTIONS]
    return [
        {"prompt": r["Question"], "reference": r["Best Answer"], "wrong": r["Incorrect Answers"].split(";")[0].strip()}
        for r in rows
    ]


@pytest.fixture
def dataset(tmp_path: Path, questions: list[dict[str, str]]) -> str:
    """Those questions as a prompts-only JSONL dataset: the model under test answers them."""
    path = tmp_path / "truthfulqa.jsonl"
    path.write_text("".join(json.dumps({"prompt": q["prompt"], "reference": q["reference"]}) + "\n" for q in questions))
    return str(path)


BASE_CORRECT = 4  # the scripted base model answers the first 4 questions right, the rest wrong


def scripted_answers(questions: list[dict[str, str]], candidate_delay: float = 0.0, base_delay: float = 0.0):
    """A chat script for ``questions``: model "candidate" gives every best answer; any other model
    (the base) is right on the first BASE_CORRECT questions and gives a listed wrong answer after."""
    from tests.support.openai_server import Reply, chat_body, prompt_of

    by_prompt = {q["prompt"]: i for i, q in enumerate(questions)}

    def answer(path: str, body: dict) -> Reply:
        prompt = prompt_of(path, body)
        index = next(i for p, i in by_prompt.items() if p in prompt)
        candidate = body["model"] == "candidate"
        q = questions[index]
        text = q["reference"] if candidate or index < BASE_CORRECT else q["wrong"]
        return Reply(chat_body(text), delay=candidate_delay if candidate else base_delay)

    return answer


@pytest.fixture
def model_server(questions: list[dict[str, str]]):
    """A loopback OpenAI-compatible server answering ``questions`` by :func:`scripted_answers`."""
    from tests.support.openai_server import serve

    with serve(scripted_answers(questions)) as server:
        yield server
