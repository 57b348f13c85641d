"""Model names as SageMaker SDK users write them, and the base model from a package's lineage.

A reference with a scheme, a model package ARN, or a Bedrock id (with or without ``bedrock:``) needs no
lookup. A bare name is looked up with the caller's boto3 session and region, in this order:

1. a SageMaker endpoint of that name (DescribeEndpoint) -> ``sagemaker:<name>?format=<f>&region=<r>``;
   the format is read from the endpoint's model: ``jumpstart`` (the Messages API) when its container
   sets ``MESSAGES_API_ENABLED=true``, else ``tgi`` for a text-generation-inference image, ``lmi`` for a
   DJL/LMI image, and ``jumpstart`` otherwise (also for endpoints built from inference components);
2. a model package group of that name -> its latest Approved version
   (ListModelPackages, ModelApprovalStatus=Approved, SortBy=CreationTime, SortOrder=Descending);
3. a JumpStart model id in the regional JumpStart manifest -> ``jumpstart:<id>@<version>?region=<r>``.

Otherwise a ValueError lists the three lookups and what each found.

The base model of ``evaluate_base_model=True`` without ``base_model=`` comes from the candidate model
package (DescribeModelPackage), or the package an endpoint candidate's model was created from (its
container's ModelPackageName), by the first rule that gives one:

1. ``package-metadata``: ``CustomerMetadataProperties["evalstack:base_model"]``;
2. ``package-source-uri``: ``SourceUri``, when it is a model package ARN or a JumpStart hub-content ARN;
3. ``package-base-model``: ``InferenceSpecification.Containers[].BaseModel`` (HubContentName and
   HubContentVersion), what SageMaker's fine-tuning flows record and the SDK's model resolver reads:
   the JumpStart model the package was fine-tuned from;
4. ``group-first-version``: the first version of the package's group, when the package is a later one.

Each :class:`Resolution` says what was asked, what it became, the rule that matched and what was tried;
the evaluators put them in the spec, and results.json records them under ``details.model_resolution``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from evalstack.models.jumpstart import jumpstart_model
from evalstack.models.model_package import BASE_MODEL_KEY
from evalstack.models.reference import ModelReference, parse_model_reference

# Endpoint and model package group names share SageMaker's name pattern.
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_HUB_CONTENT_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:(aws|\d{12}):hub-content/[^/]+/Model/(?P<name>[^/]+)/(?P<version>[^/]+)$"
)
_UNUSABLE_ENDPOINT = ("Failed", "OutOfService", "Deleting")
_NOT_FOUND_CODES = ("ResourceNotFound", "ResourceNotFoundException")
# SageMaker's Describe* calls answer a missing resource with a ValidationException saying so.
_NOT_FOUND_MESSAGE = re.compile(r"could not find|does not exist|not found", re.IGNORECASE)


@dataclass(frozen=True)
class Resolution:
    """How one model argument became the reference that is called."""

    input: str
    reference: str
    rule: str  # reference, bedrock-id, endpoint, model-package-group, jumpstart; base: package-*, group-first-version
    tried: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "reference": self.reference, "rule": self.rule, "tried": list(self.tried)}


@dataclass
class AwsLookup:
    """The caller's boto3 session and region, and the clients made from them on first use."""

    session: Any  # a boto3 Session
    region: str | None
    sagemaker_client: Any = None
    _s3: Any = None

    def in_region(self, region: str | None) -> AwsLookup:
        """This lookup, or one with the same session in ``region`` when that is another region."""
        return self if not region or region == self.region else AwsLookup(self.session, region)

    @property
    def sagemaker(self) -> Any:
        if self.sagemaker_client is None:
            self.sagemaker_client = self.session.client("sagemaker", region_name=self.region)
        return self.sagemaker_client

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.session.client("s3", region_name=self.region)
        return self._s3


class LookupFailed(Exception):
    """An AWS call failed for another reason than "not found" (no credentials, access denied, ...)."""


def call_or_none(operation: Callable[..., Any], **kwargs: Any) -> Any | None:
    """``operation(**kwargs)``; None when the resource does not exist, LookupFailed on any other error."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return operation(**kwargs)
    except ClientError as err:
        error = err.response.get("Error", {})
        code, message = error.get("Code"), str(error.get("Message", ""))
        if code in _NOT_FOUND_CODES or (code == "ValidationException" and _NOT_FOUND_MESSAGE.search(message)):
            return None
        raise LookupFailed(f"{code}: {message}") from err
    except BotoCoreError as err:
        raise LookupFailed(f"{type(err).__name__}: {err}") from err


def _format_of(model: dict[str, Any]) -> tuple[str, str]:
    """The wire format an endpoint's model speaks, and why."""
    containers = [model["PrimaryContainer"]] if model.get("PrimaryContainer") else model.get("Containers") or []
    for container in containers:
        image = container.get("Image", "")
        environment = {k.upper(): str(v).lower() for k, v in (container.get("Environment") or {}).items()}
        if environment.get("MESSAGES_API_ENABLED") == "true":
            return "jumpstart", f"MESSAGES_API_ENABLED=true in {image or 'its container'}"
        repository = image.rsplit("/", 1)[-1].lower()
        if "tgi" in repository or "text-generation-inference" in repository:
            return "tgi", f"image {image}"
        if "djl" in repository or "lmi" in repository:
            return "lmi", f"image {image}"
    return "jumpstart", "no TGI or LMI image found, so the Messages API"


def _endpoint_model(name: str, aws: AwsLookup) -> tuple[str, dict[str, Any]] | None:
    """The endpoint's status and the model of its first variant ({} for inference components); None
    when there is no such endpoint."""
    described = call_or_none(aws.sagemaker.describe_endpoint, EndpointName=name)
    if described is None:
        return None
    config_name = described["EndpointConfigName"]
    config = call_or_none(aws.sagemaker.describe_endpoint_config, EndpointConfigName=config_name) or {}
    model_name = next((v.get("ModelName") for v in config.get("ProductionVariants") or [] if v.get("ModelName")), None)
    model = (call_or_none(aws.sagemaker.describe_model, ModelName=model_name) or {}) if model_name else {}
    return described.get("EndpointStatus", ""), model


def _endpoint(name: str, aws: AwsLookup, tried: list[str]) -> str | None:
    found = _endpoint_model(name, aws)
    if found is None:
        tried.append(f"endpoint {name!r}: none (DescribeEndpoint)")
        return None
    status, model = found
    if status in _UNUSABLE_ENDPOINT:
        raise ValueError(f"endpoint {name!r} is {status}, so it cannot answer; fix or redeploy it")
    fmt, why = _format_of(model)
    tried.append(f"endpoint {name!r}: {status}, format={fmt} ({why})")
    return f"sagemaker:{name}?format={fmt}" + (f"&region={aws.region}" if aws.region else "")


def _end_version(aws: AwsLookup, group: str, order: str, **filters: str) -> str | None:
    """The ARN of the group's oldest ("Ascending") or newest ("Descending") version matching ``filters``."""
    listed = call_or_none(
        aws.sagemaker.list_model_packages,
        ModelPackageGroupName=group,
        SortBy="CreationTime",
        SortOrder=order,
        MaxResults=1,
        **filters,
    )
    summaries = (listed or {}).get("ModelPackageSummaryList") or []
    return summaries[0]["ModelPackageArn"] if summaries else None


def _package_group(name: str, aws: AwsLookup, tried: list[str]) -> str | None:
    if call_or_none(aws.sagemaker.describe_model_package_group, ModelPackageGroupName=name) is None:
        tried.append(f"model package group {name!r}: none (DescribeModelPackageGroup)")
        return None
    arn = _end_version(aws, name, "Descending", ModelApprovalStatus="Approved")
    if arn is None:
        tried.append(f"model package group {name!r}: exists, but has no Approved version")
        return None
    tried.append(f"model package group {name!r}: latest Approved version {arn}")
    return arn


def _jumpstart(model_id: str, version: str | None, aws: AwsLookup, tried: list[str]) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    if not aws.region:
        tried.append(f"JumpStart model {model_id!r}: not looked up (no AWS region)")
        return None
    try:
        found = jumpstart_model(model_id, aws.region, aws.s3, version=version)
    except (ValueError, ClientError, BotoCoreError) as err:
        tried.append(f"JumpStart model {model_id!r}: {err}")
        return None
    if found is None:
        tried.append(f"JumpStart model {model_id!r}: not in the JumpStart manifest")
        return None
    tried.append(f"JumpStart model {model_id!r}: version {found.version}, artifact {found.artifact_uri}")
    return f"{found.reference}?region={aws.region}"


def _lookup(name: str, lookup: Callable[[], str | None], what: str, tried: list[str]) -> str | None:
    """``lookup()``, with a failed AWS call recorded in ``tried`` (and None) instead of raised."""
    try:
        return lookup()
    except LookupFailed as err:
        tried.append(f"{what} {name!r}: lookup failed ({err})")
        return None


def _pinned_jumpstart(value: str, parsed: ModelReference, aws: AwsLookup, what: str) -> Resolution:
    """A ``jumpstart:`` reference checked against the manifest and pinned to the version found now, so
    every shard and a retry load the same model."""
    aws = aws.in_region(parsed.region)
    tried: list[str] = []
    lookup = partial(_jumpstart, parsed.target, parsed.version, aws, tried)
    found = _lookup(parsed.target, lookup, "JumpStart model", tried)
    if found is None:
        raise ValueError(f"{what}: {value!r}: " + "; ".join(tried))
    return Resolution(value, parse_model_reference(found).canonical, "jumpstart", tuple(tried))


def resolve_model(value: str, aws_factory: Callable[[], AwsLookup], what: str = "model") -> Resolution:
    """The reference ``value`` names. AWS is asked (``aws_factory`` called) only for a bare name or a
    ``jumpstart:`` reference; ValueError listing every lookup when a bare name names nothing."""
    parsed = parse_model_reference(value)
    if parsed.kind == "jumpstart":
        return _pinned_jumpstart(value, parsed, aws_factory(), what)
    if parsed.kind == "bedrock" and not value.startswith("bedrock:"):
        return Resolution(value, parsed.canonical, "bedrock-id")
    if not parsed.is_label:  # kept as written: it already names its backend
        return Resolution(value, value, "reference")
    if not _SAGEMAKER_NAME.match(value):
        raise ValueError(
            f"{what}: {value!r} is a bare name, and not one of an endpoint, a model package group or a JumpStart "
            "model (1-63 letters, digits and hyphens); write a model reference (docs/models.md lists the forms)"
        )
    aws = aws_factory()
    if not aws.region:
        raise ValueError(
            f"{what}: {value!r} is a bare name, looked up as an endpoint, a model package group or a JumpStart "
            "model in an AWS region, and no region is known: pass region=, or set AWS_REGION"
        )
    tried: list[str] = []
    for rule, label, lookup in (
        ("endpoint", "endpoint", partial(_endpoint, value, aws, tried)),
        ("model-package-group", "model package group", partial(_package_group, value, aws, tried)),
        ("jumpstart", "JumpStart model", partial(_jumpstart, value, None, aws, tried)),
    ):
        found = _lookup(value, lookup, label, tried)
        if found:
            return Resolution(value, parse_model_reference(found).canonical, rule, tuple(tried))
    raise ValueError(
        f"{what}: {value!r} is a bare name, so evalstack looked it up in region {aws.region}, in order: "
        + "; ".join(tried)
        + ". Name an existing one, or write a model reference (docs/models.md lists the forms)"
    )


# -- the base model from a package's lineage -----------------------------------------------------


def _reference_of_kind(text: str, kind: str) -> ModelReference | None:
    """``text`` parsed, when it is a valid reference of ``kind``; else None."""
    try:
        parsed = parse_model_reference(text)
    except ValueError:
        return None
    return parsed if parsed.kind == kind else None


def _metadata_base(metadata: dict[str, str], arn: str, tried: list[str]) -> str | None:
    value = metadata.get(BASE_MODEL_KEY)
    if value is None:
        tried.append(f"CustomerMetadataProperties[{BASE_MODEL_KEY!r}]: not set")
        return None
    try:
        parse_model_reference(value)
    except ValueError as err:
        raise ValueError(f"model package {arn}: CustomerMetadataProperties[{BASE_MODEL_KEY!r}]: {err}") from err
    tried.append(f"CustomerMetadataProperties[{BASE_MODEL_KEY!r}]: {value}")
    return value


def _hub_jumpstart(name: str, version: str | None, aws: AwsLookup, tried: list[str]) -> str | None:
    """A hub content name and version (the public hub's names are JumpStart model ids) as a JumpStart model."""
    return _jumpstart(name, None if not version or version == "*" else version, aws, tried)


def _source_uri(source: str | None, aws: AwsLookup, tried: list[str]) -> str | None:
    if not source:
        tried.append("SourceUri: not set")
        return None
    if _reference_of_kind(source, "model-package"):
        tried.append(f"SourceUri: model package {source}")
        return source
    hub = _HUB_CONTENT_ARN.match(source)
    if hub:
        return _hub_jumpstart(hub["name"], hub["version"], aws, tried)
    tried.append(f"SourceUri {source!r}: neither a model package ARN nor a JumpStart hub-content ARN")
    return None


def _container_base(described: dict[str, Any], aws: AwsLookup, tried: list[str]) -> str | None:
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or []
    base = next((c["BaseModel"] for c in containers if (c.get("BaseModel") or {}).get("HubContentName")), None)
    if base is None:
        tried.append("InferenceSpecification.Containers[].BaseModel: not set")
        return None
    return _hub_jumpstart(base["HubContentName"], base.get("HubContentVersion"), aws, tried)


def _first_version(described: dict[str, Any], aws: AwsLookup, tried: list[str]) -> str | None:
    group = described.get("ModelPackageGroupName")
    if not group:
        tried.append("first version of its group: the package belongs to no group")
        return None
    first = _end_version(aws, group, "Ascending")
    if first is None or first == described.get("ModelPackageArn"):
        tried.append(f"first version of group {group!r}: the package itself")
        return None
    tried.append(f"first version of group {group!r}: {first}")
    return first


def _served_package(endpoint: str, aws: AwsLookup, tried: list[str]) -> str | None:
    """The model package an endpoint's model was created from (its container's ModelPackageName)."""
    found = _endpoint_model(endpoint, aws)
    containers = [] if found is None else [found[1].get("PrimaryContainer") or {}, *found[1].get("Containers", [])]
    package = next((c["ModelPackageName"] for c in containers if c.get("ModelPackageName")), None)
    if package is None or not _reference_of_kind(package, "model-package"):
        tried.append(f"endpoint {endpoint!r}: its model was not created from a model package ARN")
        return None
    tried.append(f"endpoint {endpoint!r}: serves model package {package}")
    return package


def resolve_base_model(candidate: Resolution, aws_factory: Callable[[], AwsLookup]) -> Resolution:
    """The base model of ``candidate`` (a resolved model package, or an endpoint serving one) from the
    package's lineage, by the first rule of the module docstring that gives one; ValueError listing what
    each rule found otherwise."""
    parsed = parse_model_reference(candidate.reference)
    aws = aws_factory() if parsed.kind in ("model-package", "sagemaker") else None
    tried: list[str] = []
    arn = parsed.target if parsed.kind == "model-package" else None
    if aws is not None and parsed.kind == "sagemaker":
        try:
            arn = _served_package(parsed.target, aws, tried)
        except LookupFailed as err:
            tried.append(f"endpoint {parsed.target!r}: lookup failed ({err})")
    if aws is None or arn is None:
        why = "; ".join(tried) or f"model {candidate.input!r} is a {parsed.kind} reference"
        raise ValueError(
            "base_model: evaluate_base_model=True needs a base model, or a model package ARN (or group, or an "
            f"endpoint serving one) as the model, whose lineage names one; {why}; so pass base_model="
        )
    try:
        described = call_or_none(aws.sagemaker.describe_model_package, ModelPackageName=arn)
    except LookupFailed as err:
        raise ValueError(f"base_model: DescribeModelPackage({arn}) failed: {err}") from err
    if described is None:
        raise ValueError(f"base_model: model package {arn} does not exist")
    metadata = described.get("CustomerMetadataProperties") or {}
    rules: tuple[tuple[str, Callable[[], str | None]], ...] = (
        ("package-metadata", partial(_metadata_base, metadata, arn, tried)),
        ("package-source-uri", partial(_source_uri, described.get("SourceUri"), aws, tried)),
        ("package-base-model", partial(_container_base, described, aws, tried)),
        ("group-first-version", partial(_first_version, described, aws, tried)),
    )
    for rule, lookup in rules:
        found = _lookup(arn, lookup, rule, tried)
        if found and rule != "package-metadata":
            return Resolution(arn, parse_model_reference(found).canonical, rule, tuple(tried))
        if found:  # written by a person: a bare name or an unpinned JumpStart id is resolved as model= is
            base = resolve_model(found, lambda: aws, "base_model")
            return Resolution(arn, base.reference, rule, (*tried, *base.tried))
    raise ValueError(
        f"base_model: the lineage of model package {arn} names no base model; tried: "
        + "; ".join(tried)
        + f". Pass base_model=, or set CustomerMetadataProperties[{BASE_MODEL_KEY!r}] on the package"
    )
