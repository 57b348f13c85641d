"""Tiny causal LMs with seeded random weights and tokenizers trained here on benchmark text (no downloads).

- ``gpt2``: byte-level BPE as GPT-2's (a leading space is part of the word, no start-of-sequence
  token added), on a ``GPT2LMHeadModel``;
- ``llama``: BPE over SentencePiece-style pieces (``▁`` marks a word start; a dummy ``▁`` is
  prepended to every text as SentencePiece does, so ``" A"`` alone is ``["▁", "▁A"]``), the tokenizer
  adding ``<s>`` by default, on a ``LlamaForCausalLM``.

Used by the lm-eval agreement tests and by bench/lm_eval_side_by_side.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import torch
import transformers

FAMILIES = ("gpt2", "llama")


@dataclass
class TinyModel:
    family: str
    path: Path
    model: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerFast


def gpt2_tokenizer(texts: Sequence[str], vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    raw = tokenizers.Tokenizer(tokenizers.models.BPE())
    raw.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def llama_tokenizer(texts: Sequence[str], vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    raw = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    raw.normalizer = tokenizers.normalizers.Prepend("▁")
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    raw.decoder = tokenizers.decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    raw.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True
    )


def build(
    family: str, texts: Sequence[str], folder: Path, *, window: int, width: int = 32, vocab_size: int = 700
) -> TinyModel:
    """Train the tokenizer on ``texts``, make a seeded 2-layer model and save both under ``folder``."""
    torch.manual_seed(1234)
    if family == "gpt2":
        tokenizer = gpt2_tokenizer(texts, vocab_size)
        config = transformers.GPT2Config(
            vocab_size=len(tokenizer), n_positions=window, n_embd=width, n_layer=2, n_head=2,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        model: transformers.PreTrainedModel = transformers.GPT2LMHeadModel(config)
    elif family == "llama":
        tokenizer = llama_tokenizer(texts, vocab_size)
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=window,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown tokenizer family {family!r} (known: {', '.join(FAMILIES)})")
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return TinyModel(family, folder, model, tokenizer)
