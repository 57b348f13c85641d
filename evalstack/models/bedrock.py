"""Amazon Bedrock through the Converse API (``bedrock-runtime``), including inference profiles.

Request: ``converse(modelId=<id, profile id or ARN>, messages=[{"role", "content": [{"text"}]}],
system=[{"text"}] (when the request has system turns), inferenceConfig={maxTokens, temperature, topP,
stopSequences})``. The answer is ``output.message.content[*].text`` joined. Converse returns no
log-likelihoods, so multiple choice is scored generatively.

A 200 whose body is not JSON, or lacks ``output.message.content``, is a MalformedResponseError
(retried, never cached). It is caught on the raw body in botocore's ``before-parse`` event, so the
error carries the body's first bytes and the request id; answers that reach the backend without
HTTP (a botocore Stubber) get the same check after parsing.
"""

from __future__ import annotations

import json
from typing import Any

from evalstack.models.base import GenerateRequest
from evalstack.models.dispatch import MalformedResponseError
from evalstack.models.remote import AwsRuntimeBackend


def converse_problem(answer: Any) -> str | None:
    """What is wrong with a Converse answer (raw JSON or parsed: the keys are the same), or None."""
    output = answer.get("output") if isinstance(answer, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not all(
        isinstance(block, dict) and isinstance(block.get("text", ""), str) for block in content
    ):
        return "output.message.content is not a list of content blocks"
    return None


class BedrockBackend(AwsRuntimeBackend):
    service = "bedrock-runtime"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client.meta.events.register(
            "before-parse.bedrock-runtime.Converse", self._check_raw, unique_id=f"evalstack-converse-{id(self)}"
        )

    def _check_raw(self, response_dict: dict[str, Any], **_: Any) -> None:
        if response_dict.get("status_code") != 200:
            return
        body = response_dict.get("body") or b""
        request_id = (response_dict.get("headers") or {}).get("x-amzn-requestid")
        try:
            problem = converse_problem(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = f"not JSON ({err})"
        if problem is not None:
            raise MalformedResponseError(self.name, problem, body, request_id)

    def generate_request(self, request: GenerateRequest) -> dict[str, Any]:
        turns = request.messages or (("user", request.prompt),)
        system = [{"text": content} for role, content in turns if role == "system"]
        messages = [{"role": role, "content": [{"text": content}]} for role, content in turns if role != "system"]
        config: dict[str, Any] = {
            "maxTokens": request.max_tokens,
            "temperature": request.temperature,
            "topP": request.top_p,
        }
        if request.stop:
            config["stopSequences"] = list(request.stop)
        wire: dict[str, Any] = {"modelId": self.reference.target, "messages": messages, "inferenceConfig": config}
        if system:
            wire["system"] = system
        return wire

    def send(self, request: dict[str, Any]) -> Any:
        response = self.client.converse(**request)
        problem = converse_problem(response)
        if problem is not None:
            shown = json.dumps({key: response.get(key) for key in ("output", "stopReason")}, default=str)
            raise MalformedResponseError(self.name, problem, shown, self.request_id(response))
        # Keep only the JSON-able parts worth caching (metadata carries datetimes and request ids).
        return {
            "output": response["output"],
            "stopReason": response.get("stopReason"),
            "usage": response.get("usage", {}),
        }

    def generated_text(self, response: Any) -> str:
        content = response["output"]["message"]["content"]
        return "".join(block.get("text", "") for block in content)
