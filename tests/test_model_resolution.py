"""Model identifiers as SDK users write them, resolved against moto in server mode (real HTTP, real
botocore): JumpStart ids from a manifest in moto S3, endpoint names, model package groups, and the
base model from a package's lineage."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from evalstack import storage
from evalstack.engine.run import evaluate_in_process, role_uri
from evalstack.evaluate import BenchMarkEvaluator, CustomScorerEvaluator
from evalstack.models.jumpstart import BUCKET_ENV, GATED_BUCKET_ENV, content_bucket, gated_bucket, jumpstart_model
from evalstack.models.reference import parse_model_reference
from evalstack.runtime.model_resolution import AwsLookup, Resolution, resolve_base_model, resolve_model
from evalstack.spec import EvaluationSpec
from tests.conftest import BASE_CORRECT
from tests.support.jumpstart import PublishedVersion, publish_jumpstart

REGION = "us-east-1"
LLAMA = "meta-textgeneration-llama-3-2-1b"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def jumpstart_bucket(aws: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A JumpStart content bucket in moto S3 with two models, one with three versions."""
    bucket = _unique("jumpstart-cache")
    monkeypatch.setenv(BUCKET_ENV, bucket)
    monkeypatch.setenv(GATED_BUCKET_ENV, f"{bucket}-private")
    publish_jumpstart(
        boto3.client("s3"),
        bucket,
        [
            PublishedVersion(LLAMA, "1.0.0", hosting_artifact_key=f"meta-infer/{LLAMA}/v1.0.0/infer.tar.gz"),
            PublishedVersion(
                LLAMA,
                "1.10.0",
                hosting_artifact_key=f"meta-infer/{LLAMA}/v1.10.0/infer.tar.gz",
                hosting_prepacked_artifact_key=f"meta-infer/prepack/{LLAMA}/v1.10.0/",
                gated=True,
            ),
            PublishedVersion(LLAMA, "1.2.0", hosting_artifact_key=f"meta-infer/{LLAMA}/v1.2.0/infer.tar.gz"),
            PublishedVersion("huggingface-llm-tiny", "2.0.1", hosting_artifact_key="s3://elsewhere/tiny/model.tar.gz"),
        ],
    )
    return bucket


# -- JumpStart manifest -------------------------------------------------------------------------


def test_jumpstart_latest_version_uses_the_prepacked_artifact_in_the_gated_bucket(jumpstart_bucket: str) -> None:
    model = jumpstart_model(LLAMA, REGION, boto3.client("s3"))
    assert model is not None
    # 1.10.0 > 1.2.0 numerically (a string sort would pick 1.2.0)
    assert (model.model_id, model.version, model.gated) == (LLAMA, "1.10.0", True)
    assert model.artifact_uri == f"s3://{jumpstart_bucket}-private/meta-infer/prepack/{LLAMA}/v1.10.0/"
    assert not model.compressed
    assert model.spec_uri == f"s3://{jumpstart_bucket}/community_models/{LLAMA}/specs_v1.10.0.json"
    assert model.reference == f"jumpstart:{LLAMA}@1.10.0"


def test_jumpstart_exact_and_wildcard_versions(jumpstart_bucket: str) -> None:
    s3 = boto3.client("s3")
    exact = jumpstart_model(LLAMA, REGION, s3, version="1.0.0")
    assert exact is not None and exact.version == "1.0.0"
    assert exact.artifact_uri == f"s3://{jumpstart_bucket}/meta-infer/{LLAMA}/v1.0.0/infer.tar.gz"
    assert exact.compressed and not exact.gated
    wildcard = jumpstart_model(LLAMA, REGION, s3, version="1.2.*")
    assert wildcard is not None and wildcard.version == "1.2.0"
    full_uri = jumpstart_model("huggingface-llm-tiny", REGION, s3)
    assert full_uri is not None and full_uri.artifact_uri == "s3://elsewhere/tiny/model.tar.gz"


def test_jumpstart_unknown_model_is_none_and_unknown_version_an_error(jumpstart_bucket: str) -> None:
    s3 = boto3.client("s3")
    assert jumpstart_model("no-such-model", REGION, s3) is None
    assert jumpstart_model("Not A JumpStart Id", REGION, s3) is None
    with pytest.raises(ValueError, match=r"has no version '9.9.9' .* \(it has 1.0.0, 1.2.0, 1.10.0\)"):
        jumpstart_model(LLAMA, REGION, s3, version="9.9.9")


def test_jumpstart_missing_manifest_and_bad_spec_name_the_file(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3")
    bucket = _unique("jumpstart-empty")
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv(BUCKET_ENV, bucket)
    with pytest.raises(ValueError, match=rf"s3://{bucket}/models_manifest.json: no JumpStart manifest"):
        jumpstart_model(LLAMA, REGION, s3)
    publish_jumpstart(s3, bucket, [PublishedVersion(LLAMA, "1.0.0")])  # a spec with no hosting artifact
    with pytest.raises(ValueError, match=r"specs_v1.0.0.json: neither 'hosting_prepacked_artifact_key' nor"):
        jumpstart_model(LLAMA, REGION, s3)
    bad_header = json.dumps([{"model_id": LLAMA, "version": "v1", "spec_key": "x.json"}])
    s3.put_object(Bucket=bucket, Key="models_manifest.json", Body=bad_header.encode())
    with pytest.raises(ValueError, match=r"entry 0 .*field 'version' 'v1' is not like 1.2.3"):
        jumpstart_model(LLAMA, REGION, s3)


def test_jumpstart_default_bucket_is_regional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUCKET_ENV, raising=False)
    monkeypatch.delenv(GATED_BUCKET_ENV, raising=False)
    assert content_bucket("eu-west-1") == "jumpstart-cache-prod-eu-west-1"
    assert gated_bucket("eu-west-1") == "jumpstart-private-cache-prod-eu-west-1"


# -- bare names: endpoint, model package group, JumpStart id, nothing --------------------------

TGI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.4.0-tgi2.3.1-gpu-py311"
LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124"
ROLE = "arn:aws:iam::123456789012:role/sagemaker"
CONTAINERS = {"SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}


def _lookup() -> AwsLookup:
    return AwsLookup(boto3.Session(region_name=REGION), REGION)


def _endpoint(image: str, environment: dict[str, str] | None = None) -> str:
    sm = boto3.client("sagemaker")
    name = _unique("ep")
    container = {"Image": image, "ModelDataUrl": "s3://models/model.tar.gz", "Environment": environment or {}}
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    variant = {"VariantName": "all", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return name


def _package(group: str, status: str = "Approved", **extra: object) -> str:
    spec = {"Containers": [{"Image": "img", "ModelDataUrl": "s3://models/ft.tar.gz"}], **CONTAINERS}
    return boto3.client("sagemaker").create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus=status, **{"InferenceSpecification": spec, **extra}
    )["ModelPackageArn"]


def _group(*statuses: str) -> tuple[str, list[str]]:
    group = _unique("grp")
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=group)
    return group, [_package(group, status) for status in statuses]


@pytest.mark.parametrize(
    ("image", "environment", "expected"),
    [
        (TGI_IMAGE, None, "tgi"),
        (LMI_IMAGE, {"OPTION_ROLLING_BATCH": "lmi-dist"}, "lmi"),
        (TGI_IMAGE, {"MESSAGES_API_ENABLED": "true"}, "jumpstart"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-server:1", None, "jumpstart"),
    ],
)
def test_endpoint_name_resolves_with_the_format_of_its_container(
    aws: str, image: str, environment: dict[str, str] | None, expected: str
) -> None:
    name = _endpoint(image, environment)
    found = resolve_model(name, _lookup)
    assert found.reference == f"sagemaker:{name}?format={expected}&region={REGION}"
    assert found.rule == "endpoint"
    assert found.tried == (found.tried[0],) and found.tried[0].startswith(f"endpoint {name!r}: InService, format=")
    assert parse_model_reference(found.reference).kind == "sagemaker"


def test_package_group_resolves_to_its_latest_approved_version(aws: str) -> None:
    group, arns = _group("Approved", "Approved", "PendingManualApproval", "Rejected")
    found = resolve_model(group, _lookup)
    assert (found.reference, found.rule) == (arns[1], "model-package-group")
    assert found.tried == (
        f"endpoint {group!r}: none (DescribeEndpoint)",
        f"model package group {group!r}: latest Approved version {arns[1]}",
    )


def test_jumpstart_id_resolves_to_a_pinned_jumpstart_reference(jumpstart_bucket: str) -> None:
    found = resolve_model(LLAMA, _lookup)
    assert found.reference == f"jumpstart:{LLAMA}@1.10.0?region={REGION}"
    assert found.rule == "jumpstart"
    assert found.tried[:2] == (
        f"endpoint {LLAMA!r}: none (DescribeEndpoint)",
        f"model package group {LLAMA!r}: none (DescribeModelPackageGroup)",
    )
    # an explicit jumpstart: reference is checked against the manifest and pinned the same way
    pinned = resolve_model(f"jumpstart:{LLAMA}@1.2.*", _lookup)
    assert (pinned.reference, pinned.rule) == (f"jumpstart:{LLAMA}@1.2.0?region={REGION}", "jumpstart")
    with pytest.raises(ValueError, match=r"model: 'jumpstart:nope': JumpStart model 'nope': not in the JumpStart"):
        resolve_model("jumpstart:nope", _lookup)


def test_unknown_name_lists_every_lookup_and_what_it_found(jumpstart_bucket: str) -> None:
    group, _ = _group("PendingManualApproval")  # a group, but nothing approved in it
    with pytest.raises(ValueError) as caught:
        resolve_model(group, _lookup)
    assert str(caught.value) == (
        f"model: {group!r} is a bare name, so evalstack looked it up in region {REGION}, in order: "
        f"endpoint {group!r}: none (DescribeEndpoint); "
        f"model package group {group!r}: exists, but has no Approved version; "
        f"JumpStart model {group!r}: not in the JumpStart manifest. "
        "Name an existing one, or write a model reference (docs/models.md lists the forms)"
    )


def test_lookups_that_cannot_run_are_reported_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    # No credentials at all (the autouse fixture removes them): each lookup says why it could not run.
    with pytest.raises(ValueError, match=r"endpoint 'my-model': lookup failed \(NoCredentialsError") as caught:
        resolve_model("my-model", _lookup)
    assert "model package group 'my-model': lookup failed (NoCredentialsError" in str(caught.value)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ValueError, match="no region is known: pass region=, or set AWS_REGION"):
        resolve_model("my-model", lambda: AwsLookup(boto3.Session(), None))
    with pytest.raises(ValueError, match="is a bare name, and not one of an endpoint"):
        resolve_model("meta-llama/Llama-2-7b-hf", _lookup)


def test_references_with_a_scheme_and_bedrock_ids_need_no_lookup() -> None:
    def no_aws() -> AwsLookup:
        raise AssertionError("no AWS lookup expected")

    bedrock = resolve_model("anthropic.claude-3-haiku-20240307-v1:0", no_aws)
    assert (bedrock.reference, bedrock.rule) == ("bedrock:anthropic.claude-3-haiku-20240307-v1:0", "bedrock-id")
    profile = resolve_model("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-v1:0", no_aws)
    assert profile.reference.startswith("bedrock:arn:aws:bedrock:") and profile.rule == "bedrock-id"
    openai = "openai:http://127.0.0.1:9/v1?model=m"
    explicit = resolve_model(openai, no_aws)
    assert (explicit.reference, explicit.rule, explicit.tried) == (openai, "reference", ())


# -- the base model from the package's lineage ----------------------------------------------------


def _base_of(group: str) -> Resolution:
    return resolve_base_model(resolve_model(group, _lookup), _lookup)


def test_base_from_the_evalstack_metadata_key_is_resolved_like_model(jumpstart_bucket: str) -> None:
    group = _unique("grp")
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=group)
    _package(group, CustomerMetadataProperties={"evalstack:base_model": f"jumpstart:{LLAMA}"})
    base = _base_of(group)
    assert (base.reference, base.rule) == (f"jumpstart:{LLAMA}@1.10.0?region={REGION}", "package-metadata")
    assert base.tried[0] == f"CustomerMetadataProperties['evalstack:base_model']: jumpstart:{LLAMA}"


def test_base_of_a_fine_tuned_jumpstart_package_is_its_jumpstart_base(jumpstart_bucket: str) -> None:
    group = _unique("grp")
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=group)
    container = {"Image": "img", "ModelDataUrl": "s3://models/ft.tar.gz"}
    container["BaseModel"] = {"HubContentName": LLAMA, "HubContentVersion": "1.2.0"}  # as fine-tuning records it
    boto3.client("sagemaker").create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [container], **CONTAINERS},
    )
    base = _base_of(group)
    assert (base.reference, base.rule) == (f"jumpstart:{LLAMA}@1.2.0?region={REGION}", "package-base-model")
    assert base.tried == (
        "CustomerMetadataProperties['evalstack:base_model']: not set",
        "SourceUri: not set",
        f"JumpStart model {LLAMA!r}: version 1.2.0, artifact s3://{jumpstart_bucket}/meta-infer/{LLAMA}/v1.2.0/infer.tar.gz",
    )


def test_base_of_a_later_version_is_the_first_version_of_its_group(aws: str) -> None:
    group, arns = _group("Approved", "Rejected", "Approved")
    base = _base_of(group)
    assert (base.input, base.reference, base.rule) == (arns[2], arns[0], "group-first-version")


def test_no_lineage_lists_every_rule_tried(aws: str) -> None:
    group, arns = _group("Approved")
    with pytest.raises(ValueError) as caught:
        _base_of(group)
    assert str(caught.value) == (
        f"base_model: the lineage of model package {arns[0]} names no base model; tried: "
        "CustomerMetadataProperties['evalstack:base_model']: not set; SourceUri: not set; "
        "InferenceSpecification.Containers[].BaseModel: not set; "
        f"first version of group {group!r}: the package itself. "
        "Pass base_model=, or set CustomerMetadataProperties['evalstack:base_model'] on the package"
    )
    with pytest.raises(ValueError, match="evaluate_base_model=True needs a base model, or a model package ARN"):
        resolve_base_model(resolve_model("openai:http://127.0.0.1:9/v1?model=m", _lookup), _lookup)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("arn:aws:sagemaker:us-east-1:123456789012:model-package/base-models/4", None),
        (f"arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/{LLAMA}/1.0.0", "jumpstart"),
    ],
)
def test_base_from_the_source_uri(jumpstart_bucket: str, source: str, expected: str | None) -> None:
    # moto stores no SourceUri, so DescribeModelPackage is stubbed: Stubber checks the request and the
    # response against botocore's service model. The JumpStart manifest is read from moto S3.
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/fine-tuned/2"
    client = boto3.client("sagemaker")
    described = {
        "ModelPackageName": "fine-tuned",
        "ModelPackageGroupName": "fine-tuned",
        "ModelPackageVersion": 2,
        "ModelPackageArn": arn,
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "SourceUri": source,
    }
    with Stubber(client) as stub:
        stub.add_response("describe_model_package", described, {"ModelPackageName": arn})
        base = resolve_base_model(
            resolve_model(arn, _lookup), lambda: AwsLookup(boto3.Session(region_name=REGION), REGION, client)
        )
        stub.assert_no_pending_responses()
    assert base.rule == "package-source-uri"
    assert base.reference == (source if expected is None else f"jumpstart:{LLAMA}@1.0.0?region={REGION}")


# -- through the evaluator, into results.json ------------------------------------------------------


def test_a_group_name_and_its_lineage_are_resolved_in_the_constructor_and_recorded(
    aws: str, model_server, questions: list[dict[str, str]], tmp_path: Path
) -> None:
    base_reference = f"openai:{model_server.base_url}?model=base&api=chat"
    group = _unique("tqa-ft")
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=group)
    arn = _package(group, CustomerMetadataProperties={"evalstack:base_model": base_reference})
    dataset = tmp_path / "answers.jsonl"  # the fine-tuned model's answers are in the data; the base is asked
    dataset.write_text("".join(json.dumps({**q, "response": q["reference"]}) + "\n" for q in questions))

    evaluator = CustomScorerEvaluator(evaluator="accuracy", dataset=str(dataset), model=group, evaluate_base_model=True)
    assert evaluator.model == group  # what the caller wrote stays readable
    dry = evaluator.evaluate(dry_run=True)
    assert (dry.spec["model"], dry.spec["base_model"]) == (arn, base_reference)

    output = str(tmp_path / "out")
    evaluate_in_process(EvaluationSpec.from_dict(dry.spec), output)
    candidate = json.loads(storage.read_text(storage.join(role_uri(output, "candidate"), "results.json")))
    base = json.loads(storage.read_text(storage.join(role_uri(output, "base"), "results.json")))
    assert candidate["model"] == arn and candidate["metrics"]["accuracy"] == 1.0
    assert candidate["details"]["model_resolution"] == {
        "input": group,
        "reference": arn,
        "rule": "model-package-group",
        "tried": [
            f"endpoint {group!r}: none (DescribeEndpoint)",
            f"model package group {group!r}: latest Approved version {arn}",
        ],
    }
    assert base["details"]["model_resolution"] == {
        "input": arn,
        "reference": base_reference,
        "rule": "package-metadata",
        "tried": [f"CustomerMetadataProperties['evalstack:base_model']: {base_reference}"],
    }
    assert base["metrics"]["accuracy"] == pytest.approx(BASE_CORRECT / len(questions))


def test_a_bedrock_id_without_scheme_is_the_evaluated_model() -> None:
    evaluator = BenchMarkEvaluator("GSM8K", model="anthropic.claude-3-haiku-20240307-v1:0")
    dry = evaluator.evaluate(dry_run=True)
    assert dry.spec["model"] == "bedrock:anthropic.claude-3-haiku-20240307-v1:0"
    assert dry.spec["model_resolution"]["candidate"]["rule"] == "bedrock-id"


def test_a_label_only_run_looks_nothing_up(tmp_path: Path) -> None:
    # No credentials (the autouse fixture): a lookup would fail. The dataset carries every response,
    # so the label is never resolved and the run needs no AWS.
    dataset = tmp_path / "answers.jsonl"
    row = json.dumps({"prompt": "p", "response": "a", "reference": "a"}) + "\n"
    dataset.write_text(row * 10)
    dry = CustomScorerEvaluator(evaluator="accuracy", dataset=str(dataset), model="my-model").evaluate(dry_run=True)
    assert dry.spec["model"] == "my-model" and "model_resolution" not in dry.spec


def test_base_of_an_endpoint_is_found_through_the_package_it_serves(aws: str) -> None:
    _, arns = _group("Approved", "Approved")
    sm = boto3.client("sagemaker")
    name = _unique("ep")
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"ModelPackageName": arns[1]})
    variant = {"VariantName": "all", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    candidate = resolve_model(name, _lookup)
    assert candidate.reference == f"sagemaker:{name}?format=jumpstart&region={REGION}"
    base = resolve_base_model(candidate, _lookup)
    assert (base.input, base.reference, base.rule) == (arns[1], arns[0], "group-first-version")
    assert base.tried[0] == f"endpoint {name!r}: serves model package {arns[1]}"
    plain = _endpoint(TGI_IMAGE)  # an endpoint not made from a package has no lineage
    with pytest.raises(ValueError, match=rf"endpoint '{plain}': its model was not created from a model package ARN"):
        resolve_base_model(resolve_model(plain, _lookup), _lookup)
