"""cdk-nag v3 acknowledgements: each on the narrowest construct that carries the finding, each with a
reason. Granular findings (``AwsSolutions-IAM5[Resource::...]``) are acknowledged one by one, never by
rule prefix, so a new wildcard anywhere is a new, unacknowledged finding.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

AWS_SOLUTIONS = "AwsSolutions"
SERVERLESS = "Serverless"


def acknowledge(scope: IConstruct, pack: str, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{pack}::{rule}", reason=reason))


def _render(value: Any) -> str:
    """A resolved CloudFormation value the way cdk-nag prints it in finding ids."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_render(p) for p in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        return f"<{resource}.{attribute}>"
    raise ValueError(f"cannot render {value!r} as a cdk-nag finding id")


def acknowledge_wildcard_resource(scope: IConstruct, resource_arn: str, reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for one wildcard resource of the policies under ``scope``."""
    text = _render(Stack.of(scope).resolve(resource_arn))
    acknowledge(scope, AWS_SOLUTIONS, f"AwsSolutions-IAM5[Resource::{text}]", reason)
