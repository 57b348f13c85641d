"""cdk-nag v3 acknowledgements: each on the narrowest construct that carries the finding, each with a
reason. Granular findings (``AwsSolutions-IAM5[Resource::...]``) are acknowledged one by one, never by
rule prefix, so a new wildcard anywhere is a new, unacknowledged finding.

A granular finding id contains the resource as cdk-nag prints it, and a resource from another stack
prints as its ``Fn::ImportValue`` export name, which exists only once CDK has resolved cross-stack
references during synthesis. So wildcard-resource acknowledgements are rendered lazily, from a
construct validation that runs after references are resolved and before the validation plugins:
the id then matches what cdk-nag reports, whichever stack the resource comes from.
"""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct, IValidation

AWS_SOLUTIONS = "AwsSolutions"
SERVERLESS = "Serverless"


def acknowledge(scope: IConstruct, pack: str, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{pack}::{rule}", reason=reason))


def render(value: Any) -> str:
    """A resolved CloudFormation value the way cdk-nag prints it in finding ids (its flattenCfnReference)."""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(p) for p in parts)
    if "Fn::Sub" in value:
        return render(value["Fn::Sub"])
    if "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        return f"<{render(resource)}.{render(attribute)}>"
    if "Fn::ImportValue" in value:
        return render(value["Fn::ImportValue"])
    if "Ref" in value:
        return f"<{render(value['Ref'])}>"
    raise ValueError(f"cannot render {value!r} as a cdk-nag finding id")


@jsii.implements(IValidation)
class _WildcardAcknowledgement:
    """Acknowledges one wildcard resource once synthesis has resolved the references in it."""

    def __init__(self, scope: IConstruct, resource_arn: str, reason: str) -> None:
        self._scope = scope
        self._resource_arn = resource_arn
        self._reason = reason

    def validate(self) -> list[str]:
        text = render(Stack.of(self._scope).resolve(self._resource_arn))
        acknowledge(self._scope, AWS_SOLUTIONS, f"AwsSolutions-IAM5[Resource::{text}]", self._reason)
        return []


def acknowledge_wildcard_resource(scope: IConstruct, resource_arn: str, reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for one wildcard resource of the policies under ``scope``."""
    scope.node.add_validation(_WildcardAcknowledgement(scope, resource_arn, reason))
