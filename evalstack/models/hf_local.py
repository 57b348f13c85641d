"""Local Hugging Face transformers backend on CPU (optional extra ``evalstack[hf]``).

Log-likelihoods equal lm-evaluation-harness's ``HFLM`` (0.4.x, causal models): requests are
tokenized, split and left-truncated by :mod:`evalstack.models.loglikelihood_tokens` exactly as
lm-eval does, and each continuation's log-softmax values are summed over the same positions;
greedy means every continuation token is the argmax at its position. ``hf:<path>?add_bos_token=
true|false`` overrides the tokenizer's default start-of-sequence token, as lm-eval's argument does.

What differs is how the forward passes are arranged, not what they compute:

- requests whose model input is the same (a shared context with one-token continuations, as MMLU's
  letters) are read from one row, as lm-eval's one-token-continuation cache;
- rows sharing a leading run of tokens (the choices of one question, the questions after one
  few-shot block) run that prefix once and the rest on its ``past_key_values`` cache, when caching
  saves more than ``PREFIX_MIN_SAVED`` tokens of compute (below that one big padded batch is cheaper);
- the other rows run in length-sorted, right-padded batches (no attention mask is needed: padding
  only follows the positions that are read) under a token budget set from the memory available,
  halved whenever an allocation fails;
- only the positions that are read go through the output head (``logits_to_keep``).

Results equal lm-eval's up to the float rounding of batched and cached matrix products (at most
3e-5 nats on sums of hundreds of nats in tests/test_loglikelihood_lm_eval.py). ``loglikelihood_details``
names the tokenizer and options; benchmark runs record it in results.json (``details.tokenization``).
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalstack.models.base import BackendStats, GenerateRequest, Loglikelihood, LoglikelihoodRequest
from evalstack.models.loglikelihood_tokens import PairTokenizer, Row, prefix_groups, resolve_max_length, rows
from evalstack.models.reference import ModelReference
from evalstack.models.stop_sequences import cut_at_stop

# A cached prefix costs a forward pass of its own: worth it when it saves more tokens than this.
PREFIX_MIN_SAVED = 256
# Bounds of the per-batch token budget; within them it follows the memory available.
MIN_BATCH_TOKENS = 256
MAX_BATCH_TOKENS = 16384
MEMORY_SHARE = 4  # use at most a quarter of the available memory per batch


class HFBackend:
    def __init__(
        self,
        reference: ModelReference,
        *,
        add_bos_token: bool | None = None,
        serving: dict[str, Any] | None = None,
    ) -> None:
        path = Path(reference.target)
        if not path.is_dir():
            raise ValueError(f"model reference {reference.canonical!r}: {path} is not a local model directory")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ValueError("hf: references need the optional extra: pip install 'evalstack[hf]'") from exc
        if add_bos_token is None:
            add_bos_token = reference.add_bos_token
        self.reference = reference
        self.serving = serving
        self._torch = torch
        options: dict[str, Any] = {} if add_bos_token is None else {"add_bos_token": add_bos_token}
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, **options)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self.model.eval()
        self.encoder = PairTokenizer(self.tokenizer, add_bos_token)
        self.max_length = resolve_max_length(self.model.config, self.tokenizer)
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self._keeps_logits = "logits_to_keep" in parameters
        self.batch_tokens = _initial_batch_tokens(self.model.config)
        self._requests = 0
        self._forward_passes = 0

    @property
    def name(self) -> str:
        return self.reference.canonical

    @property
    def supports_loglikelihood(self) -> bool:
        return True

    def loglikelihood_details(self) -> dict[str, Any]:
        """The tokenizer and options the log-likelihoods rest on (recorded in results.json)."""
        return {
            **self.encoder.details(),
            "max_length": self.max_length,
            "reproduces": "lm-evaluation-harness HFLM.loglikelihood (causal)",
        }

    def serving_details(self) -> dict[str, Any] | None:
        """What this backend serves when it stands in for a model package or JumpStart model (else None):
        the engine, the artifact URI and the package ARN or JumpStart id, recorded in results.json."""
        return dict(self.serving) if self.serving is not None else None

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        if not requests:
            return []
        pairs = self.encoder.pairs([(r.context, r.continuation) for r in requests])
        groups, single = prefix_groups(rows(pairs, self.max_length), PREFIX_MIN_SAVED)
        results: list[Loglikelihood | None] = [None] * len(requests)
        for group in groups:
            cache = self._prefix_cache(group.rows[0].tokens[: group.prefix])
            if cache is None:  # an architecture without a batchable cache object
                single.extend(group.rows)
            else:
                self._score(group.rows, group.prefix, cache, results)
        self._score(single, 0, None, results)
        self._requests += len(requests)
        scored = [r for r in results if r is not None]
        assert len(scored) == len(requests), "every request belongs to exactly one row"
        return scored

    def _prefix_cache(self, prefix: Sequence[int]) -> Any | None:
        torch = self._torch
        keep = {"logits_to_keep": 1} if self._keeps_logits else {}
        with torch.no_grad():
            out = self.model(torch.tensor([list(prefix)]), use_cache=True, **keep)
        self._forward_passes += 1
        cache = out.get("cache") if "cache" in out else out.get("past_key_values")
        return cache if hasattr(cache, "batch_repeat_interleave") else None

    def _score(self, batch_rows: list[Row], offset: int, cache: Any, results: list[Loglikelihood | None]) -> None:
        """Score rows (their tokens after ``offset``, on ``cache`` when given) in length-sorted batches."""
        ordered = sorted(batch_rows, key=lambda row: len(row.tokens), reverse=True)
        start = 0
        while start < len(ordered):
            width = len(ordered[start].tokens) - offset
            size = max(1, self.batch_tokens // len(ordered[start].tokens))
            # Rows much shorter than the longest wait for the next batch: padding stays under a quarter.
            chunk = [row for row in ordered[start : start + size] if 4 * (len(row.tokens) - offset) >= 3 * width]
            try:
                self._score_batch(chunk, offset, cache, results)
            except RuntimeError as exc:
                if not _out_of_memory(exc) or len(chunk) == 1:
                    raise
                self.batch_tokens = max(1, self.batch_tokens // 2)
                continue
            start += len(chunk)

    def _score_batch(self, chunk: list[Row], offset: int, cache: Any, results: list[Loglikelihood | None]) -> None:
        torch = self._torch
        width = len(chunk[0].tokens) - offset
        pad = self.encoder.prefix_token_id  # never read: padding only follows the positions read
        inputs = torch.tensor([list(row.tokens[offset:]) + [pad] * (width - len(row.tokens) + offset) for row in chunk])
        keep = width - min(row.first_scored - offset for row in chunk)
        arguments: dict[str, Any] = {"logits_to_keep": keep} if self._keeps_logits else {}
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(chunk))
            arguments[self._cache_argument] = batch_cache
        with torch.no_grad():
            logits = self.model(inputs, **arguments).logits[:, -keep:]
            logprobs = torch.log_softmax(logits, dim=-1)
        self._forward_passes += 1
        for row, row_logprobs in zip(chunk, logprobs, strict=True):
            end = len(row.tokens) - offset - (width - keep)  # the row's last read position in the kept slice
            for scored in row.scored:
                count = len(scored.continuation)
                window = row_logprobs[end - count : end]
                target = torch.tensor(scored.continuation)
                picked = window.gather(1, target.unsqueeze(1)).squeeze(1)
                greedy = bool((window.argmax(dim=-1) == target).all())
                results[scored.request] = Loglikelihood(float(picked.sum()), greedy, count)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        torch = self._torch
        outputs = []
        for request in requests:
            if request.messages and getattr(self.tokenizer, "chat_template", None):
                turns = [{"role": role, "content": content} for role, content in request.messages]
                prompt = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            else:
                prompt = request.prompt
            ids = (self.encoder.encode([prompt])[0] if prompt else []) or [self.encoder.prefix_token_id]
            ids = ids[-self.max_length :]
            sampling: dict[str, Any] = {"do_sample": request.temperature > 0}
            if request.temperature > 0:
                sampling |= {"temperature": request.temperature, "top_p": request.top_p}
            with torch.no_grad():
                generated = self.model.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=min(request.max_tokens, max(1, self.max_length - len(ids))),
                    pad_token_id=self.encoder.prefix_token_id,
                    **sampling,
                )
            text = self.tokenizer.decode(generated[0][len(ids) :], skip_special_tokens=True)
            outputs.append(cut_at_stop(text, request.stop))
            self._requests += 1
        return outputs

    def stats(self) -> BackendStats:
        return BackendStats(requests_sent=self._requests, extra={"forward_passes": self._forward_passes})

    def close(self) -> None:
        """Nothing to release; present so every backend can be closed alike."""


def _initial_batch_tokens(config: Any) -> int:
    """Tokens per batch so that keys, values, activations and read logits fit a share of free memory."""
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 4096)
    layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 32)
    vocab = int(getattr(config, "vocab_size", None) or 32000)
    per_token = 4 * (2 * layers * hidden + 8 * hidden + vocab)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform reports free pages
        available = 2**31
    return max(MIN_BATCH_TOKENS, min(MAX_BATCH_TOKENS, available // MEMORY_SHARE // per_token))


def _out_of_memory(exc: RuntimeError) -> bool:
    message = str(exc).lower()
    return "out of memory" in message or "can't allocate memory" in message
