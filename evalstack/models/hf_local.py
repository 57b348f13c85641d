"""Local Hugging Face transformers backend on CPU (optional extra ``evalstack[hf]``).

Log-likelihood follows lm-evaluation-harness's ``HFLM``: context and continuation are tokenized
separately and concatenated (an empty context is replaced by the EOS/BOS token), one forward pass
over all but the last token, and the continuation's token log-softmax values are summed; greedy
means each continuation token is the argmax at its position. Inputs longer than the model's
window are cut from the left.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalstack.models.base import BackendStats, GenerateRequest, Loglikelihood, LoglikelihoodRequest
from evalstack.models.reference import ModelReference
from evalstack.models.stop_sequences import cut_at_stop


class HFBackend:
    def __init__(self, reference: ModelReference) -> None:
        path = Path(reference.target)
        if not path.is_dir():
            raise ValueError(f"model reference {reference.canonical!r}: {path} is not a local model directory")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ValueError("hf: references need the optional extra: pip install 'evalstack[hf]'") from exc
        self.reference = reference
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self.model.eval()
        self._requests = 0
        window = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", 2048
        )
        self.max_length = int(window)

    @property
    def name(self) -> str:
        return self.reference.canonical

    @property
    def supports_loglikelihood(self) -> bool:
        return True

    def _prefix_token(self) -> int:
        token = self.tokenizer.eos_token_id
        if token is None:
            token = self.tokenizer.bos_token_id
        if token is None:
            raise ValueError(f"{self.name}: the tokenizer has no EOS/BOS token to stand in for an empty context")
        return int(token)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        torch = self._torch
        results = []
        for request in requests:
            context = self._encode(request.context) if request.context else [self._prefix_token()]
            continuation = self._encode(request.continuation)
            if not continuation:
                raise ValueError(f"{self.name}: the continuation {request.continuation!r} tokenizes to nothing")
            tokens = (context + continuation)[-(self.max_length + 1) :]
            inputs = torch.tensor([tokens[:-1]])
            with torch.no_grad():
                logits = self.model(inputs).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)[-len(continuation) :]
            target = torch.tensor(continuation)
            picked = logprobs.gather(1, target.unsqueeze(1)).squeeze(1)
            greedy = bool((logprobs.argmax(dim=-1) == target).all())
            results.append(Loglikelihood(float(picked.sum()), greedy, len(continuation)))
            self._requests += 1
        return results

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        torch = self._torch
        outputs = []
        for request in requests:
            if request.messages and getattr(self.tokenizer, "chat_template", None):
                turns = [{"role": role, "content": content} for role, content in request.messages]
                prompt = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            else:
                prompt = request.prompt
            ids = self._encode(prompt) or [self._prefix_token()]
            ids = ids[-self.max_length :]
            sampling: dict[str, Any] = {"do_sample": request.temperature > 0}
            if request.temperature > 0:
                sampling |= {"temperature": request.temperature, "top_p": request.top_p}
            with torch.no_grad():
                generated = self.model.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=min(request.max_tokens, max(1, self.max_length - len(ids))),
                    pad_token_id=self._prefix_token(),
                    **sampling,
                )
            text = self.tokenizer.decode(generated[0][len(ids) :], skip_special_tokens=True)
            outputs.append(cut_at_stop(text, request.stop))
            self._requests += 1
        return outputs

    def stats(self) -> BackendStats:
        return BackendStats(requests_sent=self._requests)

    def close(self) -> None:
        """Nothing to release; present so every backend can be closed alike."""
