"""Hand-written pipeline definitions for the local runner: Processing steps that run a line of Python."""

from __future__ import annotations

from typing import Any

ROLE_ARN = "arn:aws:iam::000000000000:role/evalstack-local"


def python_step(name: str, code: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    """A one-instance Processing step whose container runs ``python3 -c code``."""
    step: dict[str, Any] = {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
            },
            "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", "-c", code]},
            "RoleArn": ROLE_ARN,
        },
    }
    if depends_on:
        step["DependsOn"] = depends_on
    return step
