"""SageMaker model packages as model references.

A model package's artifacts are loaded inside the processing job; what to call is recorded in the
package's ``CustomerMetadataProperties`` by convention (the benchmarks helper and the lambdas use it):

- ``evalstack:model_reference``: the candidate's own model reference (e.g. an endpoint serving it);
- ``evalstack:base_model``: the base model's reference, the first rule ``evaluate_base_model=True``
  tries (``evalstack.runtime.model_resolution`` holds the others: SourceUri, the containers'
  BaseModel, the group's first version).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalstack.models.reference import parse_model_reference

MODEL_REFERENCE_KEY = "evalstack:model_reference"
BASE_MODEL_KEY = "evalstack:base_model"


@dataclass(frozen=True)
class ModelPackageInfo:
    arn: str
    group: str | None
    version: int | None
    status: str | None
    approval_status: str | None
    model_reference: str | None  # evalstack:model_reference, validated
    base_model: str | None  # evalstack:base_model, validated
    images: tuple[str, ...] = ()  # InferenceSpecification containers
    model_data_urls: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


def validated_metadata(arn: str, key: str, metadata: dict[str, str]) -> str | None:
    value = metadata.get(key)
    if value is None:
        return None
    try:
        parse_model_reference(value)
    except ValueError as exc:
        raise ValueError(f"model package {arn}: CustomerMetadataProperties[{key!r}]: {exc}") from exc
    return value


def resolve_model_package(arn: str, client: Any) -> ModelPackageInfo:
    """DescribeModelPackage ``arn`` with a boto3 ``sagemaker`` client and read the evalstack metadata."""
    if parse_model_reference(arn).kind != "model-package":
        raise ValueError(f"{arn!r} is not a SageMaker model package ARN")
    described = client.describe_model_package(ModelPackageName=arn)
    metadata = dict(described.get("CustomerMetadataProperties") or {})
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or []
    return ModelPackageInfo(
        arn=described.get("ModelPackageArn", arn),
        group=described.get("ModelPackageGroupName"),
        version=described.get("ModelPackageVersion"),
        status=described.get("ModelPackageStatus"),
        approval_status=described.get("ModelApprovalStatus"),
        model_reference=validated_metadata(arn, MODEL_REFERENCE_KEY, metadata),
        base_model=validated_metadata(arn, BASE_MODEL_KEY, metadata),
        images=tuple(c["Image"] for c in containers if c.get("Image")),
        model_data_urls=tuple(c["ModelDataUrl"] for c in containers if c.get("ModelDataUrl")),
        metadata=metadata,
    )
