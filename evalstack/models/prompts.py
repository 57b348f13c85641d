"""Answer plain prompts with a model, using an evaluation's generation hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalstack.models.base import GenerateRequest, ModelBackend


def answer_prompts(model: ModelBackend, prompts: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    """One chat turn per prompt; ``params`` holds max_tokens, temperature and top_p."""
    requests = [
        GenerateRequest(
            prompt=prompt,
            messages=(("user", prompt),),
            max_tokens=params["max_tokens"],
            temperature=params["temperature"],
            top_p=params["top_p"],
        )
        for prompt in prompts
    ]
    return model.generate(requests)
