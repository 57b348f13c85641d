"""Serve a model package's (or a JumpStart model's) own artifacts inside the job: no endpoint needed.

A model package declares its weights in ``InferenceSpecification.Containers[*]``: either
``ModelDataUrl`` (a ``model.tar.gz``) or ``ModelDataSource.S3DataSource`` (an uncompressed S3
prefix, or a gzipped tarball object); a JumpStart model, its spec's hosting artifact
(:func:`evalstack.models.jumpstart.jumpstart_model`). The artifact is fetched with the job's own
credentials into ``$EVALSTACK_HOME/models/<key>/`` (``/opt/ml/evalstack/models`` in the image), keyed
by the S3 ETags, so every shard, retry and role of one machine reuses one copy. Downloads stream to
disk through boto3's transfer manager (bounded memory, checked against the ETag seen first).
Tarballs are extracted with tarfile's ``data`` filter, which keeps every member inside the folder
(a leading ``/`` is stripped; ``..``, device files and links leading outside are refused), and the
object keys of a prefix are checked the same way.

What serves the folder is :func:`choose_engine`'s decision, recorded with its reason:

- vLLM, when the image has it (``import vllm`` finds it) and a GPU is visible (``torch.cuda.device_count()``,
  e.g. ml.g5, ml.g6, ml.p4d, ml.p5 instances): vLLM's own OpenAI-compatible server on loopback, tensor
  parallel over the GPUs, behind the OpenAI backend with vLLM's ``prompt_logprobs``
  (:mod:`evalstack.models.vllm_server`); closing the backend stops the server.
- otherwise the local transformers backend on CPU (:class:`evalstack.models.hf_local.HFBackend`, e.g.
  ml.m5 and ml.c5 instances, or a GPU image without vLLM), whose log-likelihoods are lm-eval's and equal
  an ``hf:`` reference to the same folder.

Either way the backend's ``serving_details()`` (backend, device, GPU count, reason, artifact URI, package
ARN or JumpStart id) goes into results.json ``details.serving``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from evalstack import storage
from evalstack.models.base import ModelBackend
from evalstack.models.hf_local import HFBackend
from evalstack.models.jumpstart import MANIFEST_KEY, content_bucket, jumpstart_model
from evalstack.models.reference import ModelReference, parse_model_reference

CACHE_FOLDER = "models"
READY_MARKER = ".evalstack-artifact.json"  # written last: a folder without it is incomplete


@dataclass(frozen=True)
class ModelArtifact:
    """Where a model's weights live and where that was declared (for error messages and results)."""

    uri: str  # s3://bucket/key of a tarball, or s3://bucket/prefix/ of loose files
    compressed: bool
    declared_in: str  # e.g. "InferenceSpecification.Containers[0].ModelDataUrl"


@dataclass(frozen=True)
class Engine:
    """What runs the model inside the job, and why it was chosen."""

    name: str  # "vllm" or "transformers"
    device: str  # "cuda" or "cpu"
    reason: str
    gpus: int = 0  # visible GPUs vLLM may use


def package_artifact(arn: str, described: Mapping[str, Any]) -> ModelArtifact:
    """The one model artifact a DescribeModelPackage answer declares; errors name the package and field."""
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or []
    found = [_container_artifact(arn, index, c) for index, c in enumerate(containers)]
    artifacts = [a for a in found if a is not None]
    if not artifacts:
        raise ValueError(
            f"model package {arn}: InferenceSpecification.Containers declares no model data "
            "(neither ModelDataUrl nor ModelDataSource.S3DataSource), so there is nothing to serve in the job; "
            "register the package with its model.tar.gz, or name what serves it in "
            "CustomerMetadataProperties['evalstack:model_reference']"
        )
    if len(artifacts) > 1:
        where = ", ".join(a.declared_in for a in artifacts)
        raise ValueError(
            f"model package {arn}: {len(artifacts)} containers declare model data ({where}); serving in the job "
            "takes one model, so name what serves this package in "
            "CustomerMetadataProperties['evalstack:model_reference']"
        )
    return artifacts[0]


def _container_artifact(arn: str, index: int, container: Mapping[str, Any]) -> ModelArtifact | None:
    field = f"InferenceSpecification.Containers[{index}]"
    if container.get("ModelDataUrl"):
        return _artifact(f"model package {arn}", container["ModelDataUrl"], True, f"{field}.ModelDataUrl")
    source = (container.get("ModelDataSource") or {}).get("S3DataSource")
    if not source:
        return None
    field += ".ModelDataSource.S3DataSource"
    kind, compression = source.get("S3DataType"), source.get("CompressionType")
    if kind == "S3Prefix" and compression == "None":
        return _artifact(f"model package {arn}", source.get("S3Uri", ""), False, field)
    if kind == "S3Object" and compression == "Gzip":
        return _artifact(f"model package {arn}", source.get("S3Uri", ""), True, field)
    raise ValueError(
        f"model package {arn}: {field} has S3DataType={kind!r} with CompressionType={compression!r}; "
        "served in the job are an uncompressed S3Prefix (CompressionType None) or a gzipped S3Object tarball"
    )


def _artifact(owner: str, uri: str, compressed: bool, field: str) -> ModelArtifact:
    """``owner`` (a package ARN or JumpStart reference) and ``field`` name where a bad URI came from."""
    try:
        location = storage.parse_s3(uri)
    except ValueError as exc:
        raise ValueError(f"{owner}: {field}: {exc}") from exc
    if not location.key or (compressed and location.key.endswith("/")):
        shape = "an object key" if compressed else "a prefix"
        raise ValueError(f"{owner}: {field}: {uri!r} must name {shape} in the bucket")
    return ModelArtifact(uri=uri, compressed=compressed, declared_in=field)


def choose_engine(gpus: int | None = None) -> Engine:
    """vLLM when the image has it and ``gpus`` (default: the GPUs torch sees) is above 0, else
    transformers on CPU; the reason is recorded rather than guessed at."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if gpus is None:
        gpus = visible_gpus()
    if has_vllm and gpus > 0:
        reason = f"vLLM is installed and {gpus} GPU(s) are visible: vLLM's OpenAI-compatible server on loopback"
        return Engine(name="vllm", device="cuda", reason=reason, gpus=gpus)
    if has_vllm:
        reason = "vLLM is installed but no GPU is visible (torch.cuda.device_count() is 0); transformers on CPU"
    else:
        reason = "vLLM is not installed in this image; transformers on CPU"
    return Engine(name="transformers", device="cpu", reason=reason)


def visible_gpus() -> int:
    if importlib.util.find_spec("torch") is None:
        return 0  # no torch, no CUDA: serving will say torch is missing
    import torch

    return int(torch.cuda.device_count())


def cache_root() -> Path:
    return storage.evalstack_home() / CACHE_FOLDER


def fetch_artifact(artifact: ModelArtifact, s3_client: Any, root: Path | None = None) -> Path:
    """The artifact as a local model folder, downloaded once per content (ETags) under ``root``."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    location = storage.parse_s3(artifact.uri)
    if artifact.compressed:
        etag = s3_client.head_object(Bucket=location.bucket, Key=location.key)["ETag"]
        objects = [(location.key, etag)]
    else:
        objects = _listing(s3_client, location)
        if not objects:
            raise ValueError(f"{artifact.declared_in}: no objects under {artifact.uri}")
    key = hashlib.sha256(json.dumps([artifact.uri, objects]).encode()).hexdigest()[:32]
    folder = root / key
    with _locked(root / f"{key}.lock"):
        if not (folder / READY_MARKER).is_file():
            _fill(artifact, s3_client, location, objects, root, folder)
    return model_folder(folder, artifact)


def _listing(s3_client: Any, location: storage.S3Location) -> list[tuple[str, str]]:
    prefix = location.key if location.key.endswith("/") else location.key + "/"
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
    objects = [(o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    return sorted(objects)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process of this machine fetches a given artifact; the others wait and reuse its folder."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fill(
    artifact: ModelArtifact,
    s3_client: Any,
    location: storage.S3Location,
    objects: list[tuple[str, str]],
    root: Path,
    folder: Path,
) -> None:
    """Download into a scratch folder beside ``folder`` and rename it into place when complete."""
    shutil.rmtree(folder, ignore_errors=True)  # a folder without its marker is a fetch that died
    scratch = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", suffix=".partial", dir=root))
    try:
        if artifact.compressed:
            ((key, etag),) = objects
            tarball = scratch / "model.tar.gz"
            _download(s3_client, location.bucket, key, etag, tarball)
            target = scratch / "model"
            _extract(tarball, target, artifact)
            tarball.unlink()
        else:
            target = scratch / "model"
            prefix = location.key if location.key.endswith("/") else location.key + "/"
            for key, etag in objects:
                destination = _inside(target, key[len(prefix) :], artifact, key)
                destination.parent.mkdir(parents=True, exist_ok=True)
                _download(s3_client, location.bucket, key, etag, destination)
        marker = {**asdict(artifact), "objects": objects}
        (target / READY_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.replace(target, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _download(s3_client: Any, bucket: str, key: str, etag: str, destination: Path) -> None:
    """Stream one object to disk with boto3's transfer manager (ranged GETs, bounded memory).

    The manager pins its own parts to one ETag; comparing the ETag after the download with the one
    the cache folder is named by keeps a replaced object from landing under the old content's name.
    """
    s3_client.download_file(bucket, key, str(destination))
    now = s3_client.head_object(Bucket=bucket, Key=key)["ETag"]
    if now != etag:
        raise ValueError(f"s3://{bucket}/{key} changed while it was downloaded (ETag {etag} -> {now}); run again")


def _extract(tarball: Path, target: Path, artifact: ModelArtifact) -> None:
    target.mkdir()
    try:
        with tarfile.open(tarball, "r:*") as archive:
            archive.extractall(target, filter="data")
    except tarfile.FilterError as exc:
        member = exc.tarinfo.name if exc.tarinfo is not None else "?"
        raise ValueError(
            f"{artifact.uri} ({artifact.declared_in}): refused tarball member {member!r}: {exc}; "
            "model tarballs may hold only regular files and folders inside the archive"
        ) from exc
    except tarfile.TarError as exc:
        raise ValueError(f"{artifact.uri} ({artifact.declared_in}): not a readable tar archive: {exc}") from exc


def _inside(target: Path, relative: str, artifact: ModelArtifact, key: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"{artifact.uri} ({artifact.declared_in}): refused object key {key!r}: it leads outside the folder"
        )
    return target.joinpath(*parts)


def model_folder(folder: Path, artifact: ModelArtifact) -> Path:
    """The folder holding ``config.json``: the artifact's top, or its one sub-folder (a tarred directory)."""
    if (folder / "config.json").is_file():
        return folder
    candidates = sorted(p.parent for p in folder.glob("*/config.json"))
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(
        f"{artifact.uri} ({artifact.declared_in}): no transformers model found (config.json at the top "
        f"or in one sub-folder; found {len(candidates)} sub-folders with one)"
    )


def serve_artifact(
    artifact: ModelArtifact,
    s3_client: Any,
    source: Mapping[str, Any],
    engine: Engine | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> ModelBackend:
    """Fetch ``artifact`` and serve it with ``engine`` (default: :func:`choose_engine`); ``source`` (e.g.
    the package ARN) goes into the serving record. ``client_options`` (response cache, concurrency,
    retry, timeout) configure the HTTP client of an engine served over HTTP (vLLM); transformers runs
    in this process and takes none."""
    engine = engine or choose_engine()
    needed = ("vllm",) if engine.name == "vllm" else ("torch", "transformers")
    if not all(importlib.util.find_spec(name) for name in needed):
        # Said before a download of gigabytes, not after it.
        extra = "vllm" if engine.name == "vllm" else "hf"
        raise ValueError(
            f"serving {artifact.uri} in the job with {engine.name} needs {' and '.join(needed)}: install the "
            f"optional extra 'evalstack[{extra}]' (in the image: add {extra} to the extras it is built with)"
        )
    folder = fetch_artifact(artifact, s3_client)
    serving = {
        "backend": engine.name,
        "device": engine.device,
        "engine_reason": engine.reason,
        "artifact_uri": artifact.uri,
        "artifact_declared_in": artifact.declared_in,
        **source,
    }
    if engine.name == "vllm":
        from evalstack.models.vllm_server import serve_folder

        # Named by the folder, which is named by the content: a response cached for one model is never
        # served for another that a later server on the same port holds.
        served_name = "evalstack-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        logs = storage.evalstack_home() / "logs"
        return serve_folder(folder, served_name, engine.gpus, serving, log_dir=logs, client_options=client_options)
    return HFBackend(parse_model_reference(f"hf:{folder}"), serving=serving)


def serve_model_package(
    arn: str,
    sagemaker_client: Any,
    s3_client: Any,
    engine: Engine | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> ModelBackend:
    """The package's declared model, served in this job (DescribeModelPackage, then S3)."""
    described = sagemaker_client.describe_model_package(ModelPackageName=arn)
    artifact = package_artifact(arn, described)
    source = {"model_package_arn": described.get("ModelPackageArn", arn)}
    return serve_artifact(artifact, s3_client, source, engine, client_options)


def serve_jumpstart(
    reference: ModelReference,
    s3_client: Any,
    engine: Engine | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> ModelBackend:
    """A ``jumpstart:<model id>[@version]`` reference's hosting artifact, served in this job."""
    region = reference.region or s3_client.meta.region_name
    model = jumpstart_model(reference.target, region, s3_client, version=reference.version)
    if model is None:
        raise ValueError(
            f"model reference {reference.canonical!r}: no JumpStart model {reference.target!r} in "
            f"s3://{content_bucket(region)}/{MANIFEST_KEY}"
        )
    declared_in = f"{model.spec_uri} (hosting artifact)"
    artifact = _artifact(model.reference, model.artifact_uri, model.compressed, declared_in)
    source = {"jumpstart_model_id": model.model_id, "jumpstart_version": model.version, "gated": model.gated}
    return serve_artifact(artifact, s3_client, source, engine, client_options)
