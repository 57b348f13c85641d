"""Bedrock Converse (botocore Stubber, validated against the service model), SageMaker runtime and model
packages (moto in server mode on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from evalstack.models import (
    GenerateRequest,
    LoglikelihoodRequest,
    RetriesExhaustedError,
    RetryPolicy,
    load_backend,
    parse_model_reference,
    resolve_model_package,
)
from tests.support.aws import moto_server

PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=0.0)


def _converse_response(text: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15},
        "metrics": {"latencyMs": 120},
    }


@pytest.mark.parametrize(
    "model_id",
    ["anthropic.claude-3-sonnet-20240229-v1:0", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", PROFILE_ARN],
)
def test_bedrock_converse_wire_shapes_and_throttling_retry(model_id: str) -> None:
    client = boto3.client("bedrock-runtime", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))
    backend = load_backend(f"bedrock:{model_id}", clients={"bedrock-runtime": client}, max_concurrency=1, retry=NO_WAIT)
    assert not backend.supports_loglikelihood
    expected = {
        "modelId": model_id,
        "messages": [{"role": "user", "content": [{"text": "What is 2+2?"}]}],
        "system": [{"text": "Answer with a number."}],
        "inferenceConfig": {"maxTokens": 16, "temperature": 0.0, "topP": 1.0, "stopSequences": ["\n\n"]},
    }
    with Stubber(client) as stub:
        stub.add_client_error(
            "converse", service_error_code="ThrottlingException", http_status_code=429, expected_params=expected
        )
        stub.add_response("converse", _converse_response("4"), expected)
        stub.add_response(
            "converse",
            _converse_response("Paris"),
            {
                "modelId": model_id,
                "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
                "inferenceConfig": {"maxTokens": 256, "temperature": 0.0, "topP": 1.0},
            },
        )
        out = backend.generate(
            [
                GenerateRequest(
                    prompt="",
                    messages=(("system", "Answer with a number."), ("user", "What is 2+2?")),
                    max_tokens=16,
                    stop=("\n\n",),
                ),
                GenerateRequest(prompt="Capital of France?"),
            ]
        )
        stub.assert_no_pending_responses()
    assert out == ["4", "Paris"]
    stats = backend.stats()
    assert (stats.requests_sent, stats.retries, stats.throttles) == (3, 1, 1)
    with pytest.raises(NotImplementedError):
        backend.loglikelihood([LoglikelihoodRequest("a", "b")])


def test_bedrock_validation_error_is_not_retried() -> None:
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    backend = load_backend("bedrock:amazon.nova-lite-v1:0", clients={"bedrock-runtime": client}, retry=NO_WAIT)
    with Stubber(client) as stub:
        stub.add_client_error("converse", service_error_code="ValidationException", http_status_code=400)
        with pytest.raises(Exception, match="ValidationException"):
            backend.generate([GenerateRequest(prompt="x")])
    assert backend.stats().requests_sent == 1


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server of this module's own, so its resources never meet another module's."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return moto_endpoint


def _queue_endpoint_results(endpoint: str, bodies: list[Any]) -> None:
    """moto's documented hook for scripting InvokeEndpoint answers (popped in call order)."""
    import urllib.request

    results = [{"Body": json.dumps(body), "ContentType": "application/json"} for body in bodies]
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:  # loopback moto server only
        assert response.status == 201


SAGEMAKER_CASES = {
    "tgi": (
        [{"generated_text": " 42\n\nQuestion"}],
        {
            "inputs": "Q: 6*7?\nA:",
            "parameters": {"max_new_tokens": 32, "do_sample": False, "return_full_text": False, "stop": ["\n\n"]},
        },
        {
            "inputs": "Q: 6*7?\nA:",
            "parameters": {
                "max_new_tokens": 32,
                "do_sample": True,
                "temperature": 0.7,
                "top_p": 0.9,
                "return_full_text": False,
                "stop": ["\n\n"],
            },
        },
    ),
    "lmi": (
        {"generated_text": " 42\n\nQuestion"},
        {"inputs": "Q: 6*7?\nA:", "parameters": {"max_new_tokens": 32, "do_sample": False, "stop_sequences": ["\n\n"]}},
        {
            "inputs": "Q: 6*7?\nA:",
            "parameters": {
                "max_new_tokens": 32,
                "do_sample": True,
                "temperature": 0.7,
                "top_p": 0.9,
                "stop_sequences": ["\n\n"],
            },
        },
    ),
    "jumpstart": (
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": " 42"}, "finish_reason": "stop"}]},
        {
            "messages": [{"role": "user", "content": "Q: 6*7?\nA:"}],
            "max_tokens": 32,
            "temperature": 0.0,
            "top_p": 1.0,
            "stop": ["\n\n"],
        },
        {
            "messages": [{"role": "user", "content": "Q: 6*7?\nA:"}],
            "max_tokens": 32,
            "temperature": 0.7,
            "top_p": 0.9,
            "stop": ["\n\n"],
        },
    ),
}


@pytest.mark.parametrize("fmt", sorted(SAGEMAKER_CASES))
def test_sagemaker_payload_formats_on_moto_server(aws: str, fmt: str) -> None:
    answer, greedy_body, sampled_body = SAGEMAKER_CASES[fmt]
    endpoint_name = f"llm-{fmt}"
    _queue_endpoint_results(aws, [answer, answer])
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=aws)
    sent: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:  # botocore event hook: sees the real wire request
        sent.append({"url": request.url, "headers": dict(request.headers), "body": json.loads(request.body)})

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", record)
    backend = load_backend(
        f"sagemaker:{endpoint_name}?format={fmt}&component=ic-1",
        clients={"sagemaker-runtime": client},
        max_concurrency=1,
    )
    out = backend.generate(
        [
            GenerateRequest(prompt="Q: 6*7?\nA:", max_tokens=32, stop=("\n\n",)),
            GenerateRequest(prompt="Q: 6*7?\nA:", max_tokens=32, stop=("\n\n",), temperature=0.7, top_p=0.9),
        ]
    )
    assert out == [" 42", " 42"]
    assert [item["body"] for item in sent] == [greedy_body, sampled_body]
    assert all(item["url"].endswith(f"/endpoints/{endpoint_name}/invocations") for item in sent)
    assert all(item["headers"]["X-Amzn-SageMaker-Inference-Component"] == b"ic-1" for item in sent)
    assert not backend.supports_loglikelihood


def test_sagemaker_unexpected_body_names_the_format(aws: str) -> None:
    _queue_endpoint_results(aws, [{"outputs": "x"}])
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=aws)
    backend = load_backend(
        "sagemaker:odd-one?format=tgi", clients={"sagemaker-runtime": client}, retry=RetryPolicy(max_attempts=1)
    )
    with pytest.raises(
        RetriesExhaustedError, match=r"malformed answer .*list of \{'generated_text'.*body starts '\{\"outputs\""
    ):
        backend.generate([GenerateRequest(prompt="hello there")])


def test_model_package_metadata_resolves_candidate_and_base(aws: str, tmp_path: Any) -> None:
    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=aws)
    sm.create_model_package_group(ModelPackageGroupName="llama-ft")
    arn = sm.create_model_package(
        ModelPackageGroupName="llama-ft",
        InferenceSpecification={
            "Containers": [
                {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:1", "ModelDataUrl": "s3://b/m.tar.gz"}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={
            "evalstack:model_reference": "sagemaker:llama-ft-endpoint?format=tgi",
            "evalstack:base_model": "bedrock:meta.llama3-8b-instruct-v1:0",
        },
    )["ModelPackageArn"]
    assert parse_model_reference(arn).kind == "model-package"
    info = resolve_model_package(arn, sm)
    assert (info.group, info.version) == ("llama-ft", 1)
    assert info.model_reference == "sagemaker:llama-ft-endpoint?format=tgi"
    assert info.base_model == "bedrock:meta.llama3-8b-instruct-v1:0"
    assert info.model_data_urls == ("s3://b/m.tar.gz",)
    backend = load_backend(arn, clients={"sagemaker": sm})
    assert backend.name == "sagemaker:llama-ft-endpoint?format=tgi"

    bare = sm.create_model_package(
        ModelPackageGroupName="llama-ft",
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:1"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={"evalstack:base_model": "bogus:thing"},
    )["ModelPackageArn"]
    with pytest.raises(ValueError, match="evalstack:base_model"):
        resolve_model_package(bare, sm)
