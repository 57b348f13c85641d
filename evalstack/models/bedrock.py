"""Amazon Bedrock through the Converse API (``bedrock-runtime``), including inference profiles.

Request: ``converse(modelId=<id, profile id or ARN>, messages=[{"role", "content": [{"text"}]}],
system=[{"text"}] (when the request has system turns), inferenceConfig={maxTokens, temperature, topP,
stopSequences})``. The answer is ``output.message.content[*].text`` joined. Converse returns no
log-likelihoods, so multiple choice is scored generatively.
"""

from __future__ import annotations

from typing import Any

from evalstack.models.base import GenerateRequest
from evalstack.models.remote import AwsRuntimeBackend


class BedrockBackend(AwsRuntimeBackend):
    service = "bedrock-runtime"

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
        # Keep only the JSON-able parts worth caching (metadata carries datetimes and request ids).
        return {
            "output": response["output"],
            "stopReason": response.get("stopReason"),
            "usage": response.get("usage", {}),
        }

    def generated_text(self, response: Any) -> str:
        content = response["output"]["message"]["content"]
        return "".join(block.get("text", "") for block in content)
