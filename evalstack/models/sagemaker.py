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
from evalstack.models.dispatch import MalformedResponseError
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
    """The generated text out of a ``fmt`` response body; ValueError naming what is wrong otherwise."""
    if fmt == "jumpstart":
        choices = response.get("choices") if isinstance(response, dict) else None
        if not isinstance(choices, list) or not choices:
            raise ValueError("expected a non-empty 'choices' list")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        if not isinstance(message, dict):
            raise ValueError("choices[0].message is missing")
        text = message.get("content")
        if text is None:
            return ""
    elif fmt == "tgi":
        if not isinstance(response, list) or not response or not isinstance(response[0], dict):
            raise ValueError("expected a non-empty list of {'generated_text': ...} objects")
        text = response[0].get("generated_text")
    else:
        text = response.get("generated_text") if isinstance(response, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"no generated text (a string) in the {fmt} answer")
    return text


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
        from botocore.exceptions import IncompleteReadError, ResponseStreamingError

        response = self.client.invoke_endpoint(**kwargs)
        try:
            raw = response["Body"].read()
        except (IncompleteReadError, ResponseStreamingError) as err:  # the connection closed mid-body
            raise MalformedResponseError(self.name, f"truncated body ({err})", b"", self.request_id(response)) from err
        try:
            text = sagemaker_text(self.format, json.loads(raw))
        except ValueError as err:  # JSONDecodeError included: a non-JSON or truncated body
            raise MalformedResponseError(self.name, str(err), raw, self.request_id(response)) from None
        return {"text": text, "stop": request["stop"]}

    def generated_text(self, response: Any) -> str:
        return cut_at_stop(response["text"], tuple(response["stop"]))
