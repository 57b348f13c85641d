"""A model package without evalstack metadata is served inside the job from the model data it declares.

A tiny seeded GPT-2 (tests/support/tiny_lm.py) is tarred into model.tar.gz in moto S3 (server mode), a
package declaring it is registered in moto's SageMaker, and a 10-question ARC-Easy evaluation runs
in-process on the package ARN. Its log-likelihoods must equal the ``hf:`` backend's on the folder the
package was extracted to, and results.json must say how the model was served.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from evalstack.engine.run import evaluate_in_process
from evalstack.models import LoglikelihoodRequest, load_backend
from evalstack.models.package_serving import READY_MARKER, ModelArtifact, cache_root, fetch_artifact
from evalstack.spec import EvaluationSpec
from tests.support.model_packages import IMAGE, register_package
from tests.support.tiny_lm import TinyModel, build

TEXTS = ["The sun is a star.", "Plants need water and light to grow.", "Ice melts when it is warmed."] * 20
REQUESTS = [LoglikelihoodRequest("Plants need", " water"), LoglikelihoodRequest("The sun is", " a star.")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build("gpt2", TEXTS, tmp_path_factory.mktemp("tiny-gpt2"), window=512, vocab_size=300)


def _tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_files(tiny: TinyModel) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tiny.path.iterdir()) if p.is_file()}


@pytest.fixture
def clients(aws: str) -> tuple[object, object, str]:
    """sagemaker and s3 clients on the moto server, and a bucket of this test's own."""
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return boto3.client("sagemaker", region_name="us-east-1"), s3, bucket


def _extracted() -> Path:
    (folder,) = [p.parent for p in cache_root().glob(f"*/{READY_MARKER}")]
    return folder


def test_package_is_evaluated_in_the_job_and_equals_hf_on_the_same_folder(clients, model_files, tmp_path) -> None:
    sagemaker, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="llm/model.tar.gz", Body=_tarball(model_files))
    arn = register_package(sagemaker, ModelDataUrl=f"s3://{bucket}/llm/model.tar.gz")
    hyperparameters = {"limit": 10, "seed": 3}

    def run(model: str, name: str) -> tuple[dict, list[dict]]:
        spec = EvaluationSpec(
            eval_type="benchmark", model=model, benchmark="ARC", subtasks=["easy"], hyperparameters=hyperparameters
        ).validate()
        evaluate_in_process(spec, str(tmp_path / name))
        samples = (tmp_path / name / "samples.jsonl").read_text().splitlines()
        return json.loads((tmp_path / name / "results.json").read_text()), [json.loads(s) for s in samples]

    served, served_samples = run(arn, "package")
    folder = _extracted()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != READY_MARKER} == model_files
    direct, direct_samples = run(f"hf:{folder}", "hf")

    assert served["model"] == arn
    assert served["num_samples"] == 10
    assert served["metrics"] == direct["metrics"]
    assert [s["loglikelihoods"] for s in served_samples] == [s["loglikelihoods"] for s in direct_samples]
    assert len({ll for s in served_samples for ll in s["loglikelihoods"]}) > 10  # real, varied scores
    serving = served["details"]["serving"]
    assert serving["backend"] == "transformers"
    assert serving["scoring_mode"] == "loglikelihood" == served["details"]["scoring_mode"]
    assert serving["model_package_arn"] == arn
    assert serving["artifact_uri"] == f"s3://{bucket}/llm/model.tar.gz"
    assert serving["artifact_declared_in"] == "InferenceSpecification.Containers[0].ModelDataUrl"
    assert serving["device"] == "cpu" and "vLLM" in serving["engine_reason"]
    assert "serving" not in direct["details"]


def test_generative_scoring_is_recorded_as_such(clients, model_files, tmp_path) -> None:
    sagemaker, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="llm/model.tar.gz", Body=_tarball(model_files))
    arn = register_package(sagemaker, ModelDataUrl=f"s3://{bucket}/llm/model.tar.gz")
    spec = EvaluationSpec(
        eval_type="benchmark", model=arn, benchmark="GSM8K", hyperparameters={"limit": 3, "max_tokens": 4}
    ).validate()
    evaluate_in_process(spec, str(tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["details"]["serving"]["scoring_mode"] == "generative"
    assert results["details"]["serving"]["model_package_arn"] == arn
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [s["mode"] for s in samples] == ["generate"] * 3


def test_artifact_is_fetched_once_per_content(clients, model_files) -> None:
    _, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="m/model.tar.gz", Body=_tarball(model_files))
    artifact = ModelArtifact(f"s3://{bucket}/m/model.tar.gz", compressed=True, declared_in="test")
    first = fetch_artifact(artifact, s3)
    (first / "fetched-once").write_text("a second fetch would replace this folder")
    assert fetch_artifact(artifact, s3) == first
    assert (first / "fetched-once").is_file()
    # New content under the same key has a new ETag, so it is fetched again into its own folder.
    s3.put_object(Bucket=bucket, Key="m/model.tar.gz", Body=_tarball({**model_files, "extra.txt": b"v2"}))
    second = fetch_artifact(artifact, s3)
    assert second != first and (second / "extra.txt").read_bytes() == b"v2"


def test_concurrent_fetches_of_one_artifact_download_it_once(clients, model_files) -> None:
    _, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="m/model.tar.gz", Body=_tarball(model_files))
    downloads = []
    # botocore's own event hook sees every GetObject the transfer manager sends.
    s3.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: downloads.append(params["Key"]))
    artifact = ModelArtifact(f"s3://{bucket}/m/model.tar.gz", compressed=True, declared_in="test")
    with ThreadPoolExecutor(4) as pool:  # each thread holds its own lock file handle, as processes do
        folders = list(pool.map(lambda _: fetch_artifact(artifact, s3), range(4)))
    assert len(set(folders)) == 1
    assert downloads == ["m/model.tar.gz"]
    assert [p.name for p in cache_root().iterdir() if p.is_dir()] == [folders[0].name]  # no partial folders


def test_uncompressed_prefix_from_model_data_source(clients, model_files, tiny: TinyModel) -> None:
    sagemaker, s3, bucket = clients
    for name, data in model_files.items():
        s3.put_object(Bucket=bucket, Key=f"weights/llm/{name}", Body=data)
    source = {"S3Uri": f"s3://{bucket}/weights/llm/", "S3DataType": "S3Prefix", "CompressionType": "None"}
    arn = register_package(sagemaker, ModelDataSource={"S3DataSource": source})
    backend = load_backend(arn)
    assert backend.serving_details()["artifact_declared_in"] == (
        "InferenceSpecification.Containers[0].ModelDataSource.S3DataSource"
    )
    assert backend.loglikelihood(REQUESTS) == load_backend(f"hf:{tiny.path}").loglikelihood(REQUESTS)


@pytest.mark.parametrize(
    ("members", "links", "refused"),
    [
        ({"config.json": b"{}", "../escaped.txt": b"outside"}, None, "../escaped.txt"),
        ({"config.json": b"{}"}, {"passwd": "/etc/passwd"}, "passwd"),
        ({"config.json": b"{}"}, {"up": "../../outside"}, "up"),
    ],
)
def test_tarball_members_leading_outside_are_refused(clients, members, links, refused, tmp_path) -> None:
    sagemaker, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="bad/model.tar.gz", Body=_tarball(members, links))
    arn = register_package(sagemaker, ModelDataUrl=f"s3://{bucket}/bad/model.tar.gz")
    with pytest.raises(ValueError, match=rf"s3://{bucket}/bad/model.tar.gz .*refused tarball member '{refused}'"):
        load_backend(arn)
    assert not (cache_root().parent / "escaped.txt").exists()
    assert not list(cache_root().glob(f"*/{READY_MARKER}"))  # nothing left that looks usable
    assert [p for p in cache_root().iterdir() if p.is_dir()] == []  # the scratch folder is gone


def test_prefix_object_keys_leading_outside_are_refused(clients) -> None:
    sagemaker, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="w/config.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="w/sub/../../escaped.txt", Body=b"outside")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="w/")["Contents"]]
    assert "w/sub/../../escaped.txt" in listed  # S3 keeps the key as written
    source = {"S3Uri": f"s3://{bucket}/w", "S3DataType": "S3Prefix", "CompressionType": "None"}
    arn = register_package(sagemaker, ModelDataSource={"S3DataSource": source})
    with pytest.raises(ValueError, match=r"refused object key 'w/sub/\.\./\.\./escaped\.txt'"):
        load_backend(arn)


def test_package_without_model_data_names_the_package_and_field(clients) -> None:
    sagemaker, _, _ = clients
    arn = register_package(sagemaker)
    with pytest.raises(ValueError) as err:
        load_backend(arn)
    message = str(err.value)
    assert arn in message
    assert "InferenceSpecification.Containers declares no model data" in message
    assert "ModelDataUrl" in message and "ModelDataSource.S3DataSource" in message


def test_several_containers_with_model_data_are_named(clients) -> None:
    sagemaker, _, bucket = clients
    containers = [{"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{name}/model.tar.gz"} for name in ("a", "b")]
    arn = register_package(sagemaker, containers=containers)
    with pytest.raises(ValueError, match=r"2 containers declare model data \(InferenceSpecification.Containers\[0\]"):
        load_backend(arn)


def test_a_bad_model_data_uri_names_the_package_and_field(clients) -> None:
    sagemaker, _, _ = clients
    arn = register_package(sagemaker, ModelDataUrl="s3://Not_A_Bucket/model.tar.gz")
    with pytest.raises(ValueError) as err:
        load_backend(arn)
    assert str(err.value).startswith(f"model package {arn}: InferenceSpecification.Containers[0].ModelDataUrl: ")
    assert "Not_A_Bucket" in str(err.value)


def test_unsupported_model_data_source_names_the_field(clients) -> None:
    sagemaker, _, bucket = clients
    source = {"S3Uri": f"s3://{bucket}/w/", "S3DataType": "S3Prefix", "CompressionType": "Gzip"}
    arn = register_package(sagemaker, ModelDataSource={"S3DataSource": source})
    with pytest.raises(ValueError, match=r"Containers\[0\]\.ModelDataSource\.S3DataSource has S3DataType='S3Prefix'"):
        load_backend(arn)


def test_tarball_without_a_model_says_what_was_looked_for(clients) -> None:
    sagemaker, s3, bucket = clients
    s3.put_object(Bucket=bucket, Key="x/model.tar.gz", Body=_tarball({"readme.txt": b"no weights"}))
    arn = register_package(sagemaker, ModelDataUrl=f"s3://{bucket}/x/model.tar.gz")
    with pytest.raises(ValueError, match=r"no transformers model found \(config.json at the top"):
        load_backend(arn)


@pytest.mark.parametrize("compressed", [True, False])
def test_jumpstart_reference_serves_the_hosting_artifact(clients, model_files, tiny, monkeypatch, compressed) -> None:
    _, s3, bucket = clients
    monkeypatch.setenv("EVALSTACK_JUMPSTART_BUCKET", bucket)
    manifest = [
        {"model_id": "huggingface-textgeneration-tiny", "version": version, "spec_key": f"specs/tiny-{version}.json"}
        for version in ("1.0.0", "1.1.0")
    ]
    s3.put_object(Bucket=bucket, Key="models_manifest.json", Body=json.dumps(manifest))
    if compressed:  # a tarred folder: the model sits in the archive's one sub-folder
        artifact_key = "hosting/tiny/model.tar.gz"
        s3.put_object(Bucket=bucket, Key=artifact_key, Body=_tarball({f"tiny/{n}": d for n, d in model_files.items()}))
    else:
        artifact_key = "hosting/tiny/uncompressed/"
        for name, data in model_files.items():
            s3.put_object(Bucket=bucket, Key=artifact_key + name, Body=data)
    spec = {"model_id": "huggingface-textgeneration-tiny", "hosting_prepacked_artifact_key": artifact_key}
    s3.put_object(Bucket=bucket, Key="specs/tiny-1.0.0.json", Body=json.dumps(spec))
    s3.put_object(Bucket=bucket, Key="specs/tiny-1.1.0.json", Body=json.dumps({"hosting_artifact_key": "gone/"}))

    backend = load_backend("jumpstart:huggingface-textgeneration-tiny@1.0.0")
    assert backend.loglikelihood(REQUESTS) == load_backend(f"hf:{tiny.path}").loglikelihood(REQUESTS)
    assert backend.serving_details() == {
        "backend": "transformers",
        "device": "cpu",
        "engine_reason": backend.serving_details()["engine_reason"],
        "artifact_uri": f"s3://{bucket}/{artifact_key}",
        "artifact_declared_in": f"s3://{bucket}/specs/tiny-1.0.0.json (hosting artifact)",
        "jumpstart_model_id": "huggingface-textgeneration-tiny",
        "jumpstart_version": "1.0.0",
        "gated": False,
    }
    with pytest.raises(ValueError, match=rf"no JumpStart model 'no-such-model' in s3://{bucket}/models_manifest.json"):
        load_backend("jumpstart:no-such-model")
