"""A JumpStart content bucket in moto S3: the manifest and spec files laid out as the SDK reads them
(``models_manifest.json`` listing ``{model_id, version, min_version, spec_key}``, one spec per version)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PublishedVersion:
    model_id: str
    version: str
    hosting_artifact_key: str | None = None
    hosting_prepacked_artifact_key: str | None = None
    gated: bool = False

    @property
    def spec_key(self) -> str:
        return f"community_models/{self.model_id}/specs_v{self.version}.json"

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"model_id": self.model_id, "version": self.version, "min_sdk_version": "2.49.0"}
        if self.hosting_artifact_key:
            spec["hosting_artifact_key"] = self.hosting_artifact_key
        if self.hosting_prepacked_artifact_key:
            spec["hosting_prepacked_artifact_key"] = self.hosting_prepacked_artifact_key
        if self.gated:
            spec["gated_bucket"] = True
        return spec


def publish_jumpstart(s3: Any, bucket: str, versions: list[PublishedVersion]) -> None:
    """Create ``bucket`` holding a manifest of ``versions`` and their spec files."""
    s3.create_bucket(Bucket=bucket)
    manifest = [
        {"model_id": v.model_id, "version": v.version, "min_version": "2.49.0", "spec_key": v.spec_key}
        for v in versions
    ]
    s3.put_object(Bucket=bucket, Key="models_manifest.json", Body=json.dumps(manifest).encode())
    for v in versions:
        s3.put_object(Bucket=bucket, Key=v.spec_key, Body=json.dumps(v.spec()).encode())
