"""Model packages registered in (moto's) SageMaker for the tests, each in a new group of its own."""

from __future__ import annotations

import uuid
from typing import Any

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-inference:1"


def register_package(
    sagemaker: Any,
    *,
    containers: list[dict[str, Any]] | None = None,
    metadata: dict[str, str] | None = None,
    **container: Any,
) -> str:
    """The ARN of a new package declaring ``containers`` (default: one container of IMAGE with the
    fields in ``container``), with ``metadata`` as its CustomerMetadataProperties."""
    group = f"llm-{uuid.uuid4().hex[:8]}"
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": containers if containers is not None else [{"Image": IMAGE, **container}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="PendingManualApproval",
        **({"CustomerMetadataProperties": metadata} if metadata else {}),
    )["ModelPackageArn"]
