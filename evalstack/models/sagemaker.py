"""SageMaker real-time endpoints through ``sagemaker-runtime`` InvokeEndpoint (JSON in, JSON out).

Payload formats (``format=`` in the reference):

- ``tgi`` (Hugging Face TGI container): ``{"inputs": prompt, "parameters": {"max_new_tokens", "do_sample",
  "return_full_text": false, "stop": [...], "temperature" (only when > 0), "top_p" (only when < 1)}}``
  -> ``[{"generated_text": "..."}]``. TGI rejects temperature 0 and top_p 1, so greedy decoding is
  ``do_sample: false`` with both left out.
- ``lmi`` (DJL LMI container): ``{"inputs": prompt, "parameters": {"max_new_tokens", "do_sample",
  "stop_sequences": [...], "temperature", "top_p" (as for tgi)}}`` -> ``{"generated_text": "..."}``.
- ``jumpstart`` (JumpStart LLM containers with the Messages API): ``{"messages": [{"role", "content"}],
  "max_tokens", "temperature", "top_p", "stop"}`` -> ``{"choices": [{"message": {"content": "..."}}]}``.

TGI and LMI return the stop sequence inside ``generated_text``; the text is cut at the first stop
sequence so every format answers alike. No log-likelihoods: multiple choice is scored generatively.
"""

from __future__ import annotations

import json
from typing import Any

from evalstack.models.base import GenerateRequest
from evalstack.models.openai_http import chat_messages
from evalstack.models.remote import AwsRuntimeBackend
from evalstack.models.stop_sequences import cut_at_stop


def _sampling(request: GenerateRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": request.temperature > 0}
    if request.temperature > 0:
        params["temperature"] = request.temperature
        if request.top_p < 1:
            params["top_p"] = request.top_p
    return params


def sagemaker_payload(fmt: str, request: GenerateRequest) -> dict[str, Any]:
    """The JSON body for ``fmt`` (tgi | lmi | jumpstart)."""
    if fmt == "jumpstart":
        body: dict[str, Any] = {
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        return body
    params = _sampling(request)
    if fmt == "tgi":
        params["return_full_text"] = False
        if request.stop:
            params["stop"] = list(request.stop)
    elif request.stop:
        params["stop_sequences"] = list(request.stop)
    return {"inputs": request.prompt, "parameters": params}


def sagemaker_text(fmt: str, response: Any) -> str:
    """The generated text out of a ``fmt`` response body; ValueError on any other shape."""
    if fmt == "jumpstart" and isinstance(response, dict) and "choices" in response:
        return response["choices"][0]["message"].get("content") or ""
    if fmt == "tgi" and isinstance(response, list) and response and "generated_text" in response[0]:
        return response[0]["generated_text"]
    if fmt == "lmi" and isinstance(response, dict) and "generated_text" in response:
        return response["generated_text"]
    raise ValueError(f"unexpected {fmt} response shape from the endpoint: {json.dumps(response)[:300]}")


class SageMakerBackend(AwsRuntimeBackend):
    service = "sagemaker-runtime"

    @property
    def format(self) -> str:
        return self.reference.format or ""

    def generate_request(self, request: GenerateRequest) -> dict[str, Any]:
        # The stop sequences ride along so the answer can be cut client-side as well.
        return {"body": sagemaker_payload(self.format, request), "stop": list(request.stop)}

    def send(self, request: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {
            "EndpointName": self.reference.target,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(request["body"]).encode("utf-8"),
        }
        if self.reference.component:
            kwargs["InferenceComponentName"] = self.reference.component
        response = self.client.invoke_endpoint(**kwargs)
        body = json.loads(response["Body"].read())
        return {"text": sagemaker_text(self.format, body), "stop": request["stop"]}

    def generated_text(self, response: Any) -> str:
        return cut_at_stop(response["text"], tuple(response["stop"]))
