"""JumpStart models, found the way the SageMaker Python SDK finds them: in the JumpStart manifest.

The SDK reads ``models_manifest.json`` from the regional content bucket ``jumpstart-cache-prod-<region>``
(a list of ``{"model_id", "version", "min_version", "spec_key"}`` headers), then the model's spec file
at ``spec_key``. The hosting artifact is the spec's ``hosting_prepacked_artifact_key`` when present,
else its ``hosting_artifact_key`` (``sagemaker.core.jumpstart.artifacts.model_uris``): a ``model.tar.gz``
or, for newer models, an S3 prefix of uncompressed files. Gated models (``gated_bucket: true``) keep
their artifacts in ``jumpstart-private-cache-prod-<region>``.

``EVALSTACK_JUMPSTART_BUCKET`` replaces the content bucket (manifest, specs and public artifacts) and
``EVALSTACK_JUMPSTART_GATED_BUCKET`` the gated one: for a private mirror of JumpStart, and for tests.

Only reading happens here, with the S3 client the caller gives; nothing is downloaded but the two JSON files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from typing import Any

MANIFEST_KEY = "models_manifest.json"
BUCKET_ENV = "EVALSTACK_JUMPSTART_BUCKET"
GATED_BUCKET_ENV = "EVALSTACK_JUMPSTART_GATED_BUCKET"
# JumpStart model ids: lowercase words joined by hyphens ("meta-textgeneration-llama-3-2-1b-instruct").
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_NOT_FOUND = ("NoSuchKey", "404", "NotFound")


@dataclass(frozen=True)
class JumpStartModel:
    """One version of a JumpStart model and where its hosting artifact lies."""

    model_id: str
    version: str
    artifact_uri: str  # s3://... of a model.tar.gz, or of a prefix (ending in "/") of uncompressed files
    spec_uri: str  # the spec file this was read from
    gated: bool = False  # artifacts in the private bucket (the model needs an accepted EULA)

    @property
    def reference(self) -> str:
        """The model reference that names this model: ``jumpstart:<model_id>@<version>``."""
        return f"jumpstart:{self.model_id}@{self.version}"

    @property
    def compressed(self) -> bool:
        return self.artifact_uri.endswith((".tar.gz", ".tgz"))


def content_bucket(region: str) -> str:
    return os.environ.get(BUCKET_ENV) or f"jumpstart-cache-prod-{region}"


def gated_bucket(region: str) -> str:
    return os.environ.get(GATED_BUCKET_ENV) or f"jumpstart-private-cache-prod-{region}"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _read_json(s3_client: Any, bucket: str, key: str) -> Any | None:
    """The JSON object at s3://bucket/key, or None when there is none; other S3 errors propagate."""
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as err:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return None
        raise
    try:
        return json.loads(body)
    except ValueError as err:
        raise ValueError(f"s3://{bucket}/{key}: not valid JSON ({err})") from err


def _manifest_versions(manifest: Any, model_id: str, where: str) -> dict[str, str]:
    """{version: spec_key} of ``model_id`` in the manifest list."""
    if not isinstance(manifest, list):
        raise ValueError(f"{where}: expected a JSON list of model headers, got {type(manifest).__name__}")
    versions: dict[str, str] = {}
    for index, header in enumerate(manifest):
        if not isinstance(header, dict):
            raise ValueError(f"{where}: entry {index} is not an object")
        if header.get("model_id") != model_id:
            continue
        version, spec_key = header.get("version"), header.get("spec_key")
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ValueError(f"{where}: entry {index} ({model_id}): field 'version' {version!r} is not like 1.2.3")
        if not isinstance(spec_key, str) or not spec_key:
            raise ValueError(f"{where}: entry {index} ({model_id}): field 'spec_key' is missing")
        versions[version] = spec_key
    return versions


def _select(versions: dict[str, str], wanted: str | None) -> str | None:
    """The highest version matching ``wanted``: None or "*" is the latest, "1.*" a wildcard, else exact."""
    pattern = wanted or "*"
    matching = [v for v in versions if fnmatch.fnmatchcase(v, pattern)]
    return max(matching, key=_version_key) if matching else None


def _artifact_uri(spec: dict[str, Any], bucket: str, where: str) -> str:
    key = spec.get("hosting_prepacked_artifact_key") or spec.get("hosting_artifact_key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: neither 'hosting_prepacked_artifact_key' nor 'hosting_artifact_key' is set")
    return key if key.startswith("s3://") else f"s3://{bucket}/{key}"


def jumpstart_model(model_id: str, region: str, s3_client: Any, version: str | None = None) -> JumpStartModel | None:
    """The JumpStart model ``model_id`` (latest version, or ``version``: exact or a wildcard like "1.*")
    in ``region``'s manifest, or None when the manifest has no such model id.

    A model id that exists without the wanted version, or a malformed manifest or spec, is a ValueError
    naming the file and the field. ``s3_client`` is a boto3 S3 client with the caller's credentials.
    """
    if not MODEL_ID.match(model_id):
        return None
    bucket = content_bucket(region)
    where = f"s3://{bucket}/{MANIFEST_KEY}"
    manifest = _read_json(s3_client, bucket, MANIFEST_KEY)
    if manifest is None:
        raise ValueError(f"{where}: no JumpStart manifest there (set {BUCKET_ENV} to a bucket that holds one)")
    versions = _manifest_versions(manifest, model_id, where)
    if not versions:
        return None
    chosen = _select(versions, version)
    if chosen is None:
        available = ", ".join(sorted(versions, key=_version_key))
        raise ValueError(f"JumpStart model {model_id!r} has no version {version!r} in {where} (it has {available})")
    spec_key = versions[chosen]
    spec_uri = f"s3://{bucket}/{spec_key}"
    spec = _read_json(s3_client, bucket, spec_key)
    if not isinstance(spec, dict):
        raise ValueError(f"{spec_uri}: the spec of {model_id}@{chosen} is missing or not a JSON object")
    gated = bool(spec.get("gated_bucket", False))
    artifact = _artifact_uri(spec, gated_bucket(region) if gated else bucket, spec_uri)
    return JumpStartModel(model_id=model_id, version=chosen, artifact_uri=artifact, spec_uri=spec_uri, gated=gated)
