"""Model reference parsing: every accepted form, and a clear ValueError for everything else."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from evalstack.models import ACCEPTED_FORMS, ModelReference, load_backend, parse_model_reference
from evalstack.models.openai_http import resolve_api_key
from tests.support.aws import moto_server


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "openai:http://127.0.0.1:8000/v1?model=llama3",
            ModelReference("openai", "http://127.0.0.1:8000/v1", model="llama3", api="completions", logprobs="auto"),
        ),
        (
            "openai:https://api.example.com/v1/?model=gpt-x&api=chat&logprobs=none&api_key_env=OPENAI_API_KEY&timeout=30",
            ModelReference(
                "openai",
                "https://api.example.com/v1",
                model="gpt-x",
                api="chat",
                logprobs="none",
                api_key_env="OPENAI_API_KEY",
                timeout=30.0,
            ),
        ),
        (
            "openai:http://vllm:8000/v1?model=m&logprobs=prompt_logprobs&api_key_secret=prod/vllm-key",
            ModelReference(
                "openai",
                "http://vllm:8000/v1",
                model="m",
                api="completions",
                logprobs="prompt_logprobs",
                api_key_secret="prod/vllm-key",
            ),
        ),
        (
            "bedrock:anthropic.claude-3-sonnet-20240229-v1:0",
            ModelReference("bedrock", "anthropic.claude-3-sonnet-20240229-v1:0"),
        ),
        (
            "bedrock:us.anthropic.claude-3-5-sonnet-20240620-v1:0?region=us-west-2",
            ModelReference("bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", region="us-west-2"),
        ),
        (
            "bedrock:arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0",
            ModelReference(
                "bedrock", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0"
            ),
        ),
        (
            "sagemaker:my-llm-endpoint?format=lmi&region=eu-west-1&component=ic-a",
            ModelReference("sagemaker", "my-llm-endpoint", format="lmi", region="eu-west-1", component="ic-a"),
        ),
        ("hf:/opt/ml/processing/model", ModelReference("hf", "/opt/ml/processing/model")),
        (
            "arn:aws:sagemaker:us-east-1:123456789012:model-package/llama-ft/3",
            ModelReference(
                "model-package", "arn:aws:sagemaker:us-east-1:123456789012:model-package/llama-ft/3", region="us-east-1"
            ),
        ),
        ("my-finetuned-llama", ModelReference("label", "my-finetuned-llama")),
        ("meta-llama/Llama-2-7b-hf-fine-tuned", ModelReference("label", "meta-llama/Llama-2-7b-hf-fine-tuned")),
        ("llama3.1", ModelReference("label", "llama3.1")),  # a version, not a Bedrock provider.model
        ("gpt-3.5", ModelReference("label", "gpt-3.5")),
        # Bedrock ids, inference profile ids and ARNs without a scheme, as the SageMaker SDK takes them
        ("anthropic.claude-3-haiku-20240307-v1:0", ModelReference("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")),
        (
            "us.anthropic.claude-3-5-sonnet-20240620-v1:0?region=us-west-2",
            ModelReference("bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", region="us-west-2"),
        ),
        ("amazon.titan-text-lite-v1", ModelReference("bedrock", "amazon.titan-text-lite-v1")),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2",
            ModelReference("bedrock", "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2"),
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
            ModelReference("bedrock", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"),
        ),
        (
            "jumpstart:meta-textgeneration-llama-3-2-1b",
            ModelReference("jumpstart", "meta-textgeneration-llama-3-2-1b"),
        ),
        (
            "jumpstart:meta-textgeneration-llama-3-2-1b@1.2.0?region=eu-west-1",
            ModelReference("jumpstart", "meta-textgeneration-llama-3-2-1b", version="1.2.0", region="eu-west-1"),
        ),
        ("jumpstart:huggingface-llm-x@2.*", ModelReference("jumpstart", "huggingface-llm-x", version="2.*")),
    ],
)
def test_accepted_forms(text: str, expected: ModelReference) -> None:
    parsed = parse_model_reference(text)
    assert parsed == expected
    assert parse_model_reference(parsed.canonical) == parsed  # canonical form round-trips


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("openai:http://h/v1?model=m&api_key=sk-live-123", "would put a secret"),
        ("openai:http://user:pw@h/v1?model=m", "must not carry credentials"),
        ("openai:http://h/v1", "need \\?model="),
        ("openai:h:8000/v1?model=m", "must be http"),
        ("openai:http://h/v1?model=m&api=embeddings", "api='embeddings' is not one of chat, completions"),
        ("openai:http://h/v1?model=m&logprobs=yes", "logprobs='yes'"),
        ("openai:http://h/v1?model=m&temperature=0", "unknown option 'temperature'"),
        ("openai:http://h/v1?model=m&model=n", "given twice"),
        ("openai:http://h/v1?model=m&api_key_env=1BAD", "not an environment variable name"),
        ("openai:http://h/v1?model=m&api_key_env=A&api_key_secret=b", "not both"),
        ("openai:http://h/v1?model=m&timeout=-1", "finite number of seconds above 0"),
        ("openai:http://h/v1?model=m&timeout=inf", "finite number of seconds above 0"),
        ("openai:http://h/v1?model=m&timeout=nan", "finite number of seconds above 0"),
        ("openai:http://h/v1?model=m&timeout=86401", "at most 86400"),
        ("openai:http://h:99999/v1?model=m", "port must be a number from 1 to 65535"),
        ("openai:http://h:0/v1?model=m", "port must be a number from 1 to 65535"),
        ("openai:http://h:x/v1?model=m", "port must be a number from 1 to 65535"),
        ("openai:http://h/v1\r\nX-Injected: 1?model=m", "control characters"),
        ("openai:http://h/v1?model=m\nx", "control characters"),
        ("bedrock:model\x00id", "control characters"),
        ("sagemaker:ep?format=tgi&component=c\rd", "control characters"),
        ("openai:http://h/v1?model=m&api_key_env=hf_AbCdEfGhIjKlMnOpQrStUv", "not an environment variable name"),
        ("bedrock:", "need a model id"),
        ("bedrock:anthropic.claude-v2?region=mars", "not an AWS region"),
        ("bedrock:arn:aws:s3:::bucket", "not a Bedrock ARN"),
        ("sagemaker:my-endpoint", "need \\?format="),
        ("sagemaker:my-endpoint?format=onnx", "format='onnx'"),
        ("sagemaker:bad_name!?format=tgi", "endpoint name"),
        ("hf:", "local model directory"),
        ("arn:aws:sagemaker:us-east-1:123456789012:endpoint/x", "model package and Bedrock ARNs"),
        ("jumpstart:", "JumpStart model id ''"),
        ("jumpstart:Meta_Llama", "lowercase letters, digits and hyphens"),
        ("jumpstart:meta-llama@v1", "version 'v1' must be dotted numbers"),
        ("jumpstart:meta-llama@1.0?format=tgi", "unknown option 'format'"),
        ("anthropic.claude-v2?region=mars", "not an AWS region"),
        ("vertex:gemini", "unknown scheme 'vertex'"),
        ("http://127.0.0.1:8000/v1", "needs the 'openai:' scheme"),
        (" openai:http://h/v1?model=m", "whitespace"),
    ],
)
def test_rejections_name_the_problem_and_list_the_forms(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_model_reference(text)
    message = str(caught.value)
    assert all(form in message for form in ACCEPTED_FORMS)
    assert "sk-live-123" not in message and "pw@" not in message


def test_a_label_cannot_be_loaded() -> None:
    with pytest.raises(ValueError, match="label only") as caught:
        load_backend("my-finetuned-llama")
    assert "openai:<base_url>?model=<name>" in str(caught.value)


def test_identity_ignores_transport_options() -> None:
    plain = parse_model_reference("openai:http://h/v1?model=m")
    tuned = parse_model_reference("openai:http://h/v1?model=m&timeout=9&api_key_env=K")
    assert plain.identity == tuned.identity != parse_model_reference("openai:http://h/v1?model=n").identity


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server of this module's own, so its resources never meet another module's."""
    with moto_server() as endpoint:
        yield endpoint


def test_api_key_from_secrets_manager(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_endpoint)
    client.create_secret(Name="plain-key", SecretString="sk-plain")
    client.create_secret(Name="json-key", SecretString='{"api_key": "sk-json"}')
    client.create_secret(Name="json-other", SecretString='{"token": "x"}')
    base = "openai:http://127.0.0.1:1/v1?model=m&api_key_secret="
    assert resolve_api_key(parse_model_reference(base + "plain-key"), client) == "sk-plain"
    assert resolve_api_key(parse_model_reference(base + "json-key"), client) == "sk-json"
    with pytest.raises(ValueError, match="without an 'api_key' field"):
        resolve_api_key(parse_model_reference(base + "json-other"), client)


@pytest.mark.parametrize(
    "reference",
    [
        "openai:http://h/v1?model=x&auth=sk-live-123",
        "openai:http://h/v1?model=x&Authorization=Bearer%20sk-live-123",
        "openai:http://h/v1?model=x&bearer=sk-live-123",
        "openai:http://h/v1?model=x&api_key_env=sk-live-123",
    ],
)
def test_no_secret_reaches_an_error_message(reference: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_model_reference(reference)
    assert "sk-live-123" not in str(caught.value)
