"""A model package served by vLLM inside the job, tested without a GPU.

A stand-in ``vllm`` package (tests/support/vllm_standin) is put on the server subprocess's PYTHONPATH:
its ``vllm.entrypoints.openai.api_server`` parses the flags evalstack passes and serves the tests' toy
prompt_logprobs model on the given port. Everything else is real: the package in moto's SageMaker, its
tarball in moto's S3, the subprocess and its process group, the health wait and HTTP round trips.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import boto3
import pytest

from evalstack.engine.serving import add_serving, record_serving
from evalstack.models import GenerateRequest, LoglikelihoodRequest
from evalstack.models.package_serving import (
    Engine,
    ModelArtifact,
    choose_engine,
    serve_artifact,
    serve_model_package,
    visible_gpus,
)
from evalstack.models.vllm_server import VLLMBackend, VLLMServerError, serve_folder, tensor_parallel_size
from tests.support.model_packages import register_package
from tests.support.openai_server import toy_loglikelihood

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "support" / "vllm_standin"
CONFIG = {"model_type": "llama", "num_attention_heads": 12}
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The stand-in vLLM importable here and in subprocesses; returns where it records its launch."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(STANDIN), str(ROOT)]))
    record = tmp_path / "launch.json"
    monkeypatch.setenv("VLLM_STANDIN_RECORD", str(record))
    return record


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _launched(record: Path) -> dict:
    return json.loads(record.read_text())


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def test_choose_engine_decides_by_vllm_and_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert importlib.util.find_spec("vllm") is None  # this venv has no vLLM
    absent = choose_engine(gpus=4)
    assert (absent.name, absent.device) == ("transformers", "cpu")
    assert "vLLM is not installed" in absent.reason
    probed = choose_engine()  # no vLLM and torch's own count of GPUs
    assert probed.name == "transformers" and visible_gpus() == __import__("torch").cuda.device_count()

    monkeypatch.syspath_prepend(str(STANDIN))
    with_gpus = choose_engine(gpus=4)
    assert (with_gpus.name, with_gpus.device, with_gpus.gpus) == ("vllm", "cuda", 4)
    assert "4 GPU(s)" in with_gpus.reason
    no_gpu = choose_engine(gpus=0)
    assert (no_gpu.name, no_gpu.device) == ("transformers", "cpu")
    assert "no GPU is visible" in no_gpu.reason


def test_vllm_engine_without_vllm_is_refused_before_any_download() -> None:
    artifact = ModelArtifact("s3://models/llm/model.tar.gz", True, "InferenceSpecification.Containers[0].ModelDataUrl")
    engine = Engine(name="vllm", device="cuda", reason="given", gpus=2)
    # No S3 client: anything fetched would fail differently.
    with pytest.raises(ValueError, match=r"with vllm needs vllm: install the optional extra 'evalstack\[vllm\]'"):
        serve_artifact(artifact, None, {}, engine)


@pytest.mark.parametrize(("heads", "gpus", "expected"), [(12, 8, 6), (32, 8, 8), (32, 1, 1), (7, 4, 1), (None, 4, 4)])
def test_tensor_parallel_size_divides_the_heads(tmp_path: Path, heads: int | None, gpus: int, expected: int) -> None:
    (tmp_path / "config.json").write_text(json.dumps({} if heads is None else {"num_attention_heads": heads}))
    assert tensor_parallel_size(tmp_path, gpus) == expected


def _tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_package_is_served_by_vllm_in_the_job(aws: str, standin: Path, tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    files = {"config.json": json.dumps(CONFIG), "tokenizer_config.json": json.dumps({"chat_template": CHAT_TEMPLATE})}
    s3.put_object(Bucket=bucket, Key="llm/model.tar.gz", Body=_tarball(files))
    arn = register_package(sagemaker, ModelDataUrl=f"s3://{bucket}/llm/model.tar.gz")
    engine = choose_engine(gpus=8)

    backend = serve_model_package(arn, sagemaker, s3, engine)
    assert isinstance(backend, VLLMBackend)
    launched = _launched(standin)
    try:
        args = launched["args"]
        assert json.loads((Path(args["model"]) / "config.json").read_text()) == CONFIG  # the extracted artifact
        assert args["host"] == "127.0.0.1" and args["port"] == backend.server.port
        assert args["tensor_parallel_size"] == 6  # 12 heads over at most 8 GPUs
        assert args["served_model_name"] == backend.reference.model
        assert backend.reference.target == f"http://127.0.0.1:{args['port']}/v1"
        assert _alive(launched["pid"]) and _alive(launched["worker_pid"])

        requests = [LoglikelihoodRequest("Plants need", " water"), LoglikelihoodRequest("The sun is", " a star.")]
        scored = backend.loglikelihood(requests)
        expected = [toy_loglikelihood(r.context, r.continuation) for r in requests]
        assert [s.logprob for s in scored] == pytest.approx([logprob for logprob, _ in expected])
        assert [s.is_greedy for s in scored] == [greedy for _, greedy in expected]
        assert backend.loglikelihood_details()["logprobs"] == "prompt_logprobs"
        chat = GenerateRequest(prompt="Hi", messages=(("user", "Hi"),), max_tokens=4)
        plain = GenerateRequest(prompt="Q: 2+2?\nA:", max_tokens=4)
        assert backend.generate([chat, plain]) == ["A", "A"]
        # Chat turns use the model's chat template (the server's), a plain prompt goes as is.
        assert backend.generate_request(chat)["path"] == "/chat/completions"
        assert backend.generate_request(plain)["path"] == "/completions"

        records = str(tmp_path / "records")
        record_serving(records, 0, 1, backend, kms_key_id=None)
        details = {"scoring_mode": "loglikelihood"}
        add_serving(details, records)
        assert details["serving"] == {
            "backend": "vllm",
            "device": "cuda",
            "gpus": 8,
            "tensor_parallel_size": 6,
            "engine_reason": engine.reason,
            "artifact_uri": f"s3://{bucket}/llm/model.tar.gz",
            "artifact_declared_in": "InferenceSpecification.Containers[0].ModelDataUrl",
            "model_package_arn": arn,
            "scoring_mode": "loglikelihood",
        }
    finally:
        backend.close()
    assert not _alive(launched["pid"]) and not _alive(launched["worker_pid"])
    backend.close()  # a second close (the step's, after an error handler's) is harmless


def test_server_is_stopped_when_the_evaluation_fails(standin: Path, tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    backend = serve_folder(folder, "m", 1, {}, log_dir=tmp_path / "logs")
    with pytest.raises(RuntimeError, match="scoring failed"), backend:
        assert backend.generate([GenerateRequest(prompt="Q")]) == ["A"]
        raise RuntimeError("scoring failed")
    launched = _launched(standin)
    assert not _alive(launched["pid"]) and not _alive(launched["worker_pid"])


def test_client_options_reach_the_http_client(standin: Path, tmp_path: Path) -> None:
    """load_backend's concurrency and timeout apply to the served engine's client; its default is vLLM's."""
    folder = _model_folder(tmp_path)
    with serve_folder(folder, "m", 1, {}, log_dir=tmp_path / "logs") as default:
        assert default.dispatcher.concurrency.maximum == 32
    options = {"max_concurrency": 3, "timeout": 7.0, "cache": None, "retry": None}
    with serve_folder(folder, "m", 1, {}, log_dir=tmp_path / "logs", client_options=options) as backend:
        assert backend.dispatcher.concurrency.maximum == 3 and backend._timeout == 7.0
        assert backend.generate([GenerateRequest(prompt="Q")]) == ["A"]


def test_server_exiting_at_startup_is_reported_with_its_log(standin: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_STANDIN_MODE", "exit")
    with pytest.raises(VLLMServerError) as raised:
        serve_folder(_model_folder(tmp_path), "m", 2, {}, log_dir=tmp_path / "logs")
    message = str(raised.value)
    (log,) = (tmp_path / "logs").glob("vllm-*.log")
    assert "exited with code 1 before it was healthy" in message
    assert f"its log is {log}" in message
    assert "CUDA out of memory (stand-in)" in message  # the log's tail


def test_server_never_healthy_is_stopped_and_reported(standin: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_STANDIN_MODE", "hang")
    with pytest.raises(VLLMServerError) as raised:
        serve_folder(_model_folder(tmp_path), "m", 1, {}, log_dir=tmp_path / "logs", startup_timeout=1.5)
    message = str(raised.value)
    (log,) = (tmp_path / "logs").glob("vllm-*.log")
    assert "was not healthy (GET /health) within 1.5 s" in message
    assert f"its log is {log}" in message and "mode=hang" in message
    launched = _launched(standin)
    assert not _alive(launched["pid"]) and not _alive(launched["worker_pid"])
