"""Log-likelihood requests as token ids, split and windowed the way lm-evaluation-harness's HFLM does.

lm-eval (0.4.x, ``HFLM`` with a causal model) turns ``(context, continuation)`` into tokens so:

- trailing whitespace of the context moves to the front of the continuation (a SentencePiece
  tokenizer would otherwise give ``" A"`` a lone ``"▁"`` token);
- the context and the whole string are each tokenized, the continuation being the whole string's
  tokens after as many tokens as the context has (so a word spanning the boundary is tokenized as
  in running text);
- special tokens follow the tokenizer's default (a Llama tokenizer adds ``<s>``, GPT-2's adds
  nothing) unless ``add_bos_token`` says otherwise, and never when the string already starts with
  the start-of-sequence text;
- an empty context becomes the prefix token (BOS, else EOS), unless the continuation itself starts
  with it, in which case that first token is the context;
- the model sees ``(context + continuation)[-(max_length + 1):][:-1]``: cut from the left, last token
  dropped, and the continuation's log-probabilities are read from the last ``len(continuation)``
  positions.

This module holds those rules without torch, plus the pure helpers the server backends use to
split echoed prompts by character offsets with the same whitespace rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# lm-eval's fallback window when neither the config nor the tokenizer gives one.
DEFAULT_MAX_LENGTH = 2048
# Tokenizers report this (int(1e30)) when they have no real limit; lm-eval ignores it too.
TOKENIZER_NO_LIMIT = int(1e30)
WINDOW_ATTRIBUTES = ("n_positions", "max_position_embeddings", "n_ctx")
SPLIT_RULE = (
    "lm-eval HFLM _encode_pair: trailing context whitespace moved to the continuation; context+continuation "
    "tokenized together and the continuation is the tail after the context's own tokens; left-truncated to "
    "max_length + 1 tokens"
)


def move_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation (lm-eval's rule)."""
    kept = context.rstrip()
    return kept, context[len(kept) :] + continuation


def echo_split_offset(context: str) -> int:
    """The character offset where a server-tokenized prompt's continuation starts: tokens ending
    past it are scored, so whitespace ending the context counts as continuation, as in lm-eval."""
    return len(context.rstrip())


def server_details(logprobs_mode: str) -> dict[str, Any]:
    """What a server backend's log-likelihoods rest on, for results.json."""
    split = {
        "echo": "character offsets: echoed tokens whose text_offset span ends past the context "
        "(trailing context whitespace counted as continuation, as lm-eval)",
        "prompt_logprobs": "character lengths: the shortest tail of prompt tokens whose decoded texts cover "
        "the continuation (trailing context whitespace counted as continuation, as lm-eval)",
    }[logprobs_mode]
    return {"tokenization": "server", "logprobs": logprobs_mode, "continuation_split": split}


def resolve_max_length(config: Any, tokenizer: Any) -> int:
    """The model's window as lm-eval resolves it: the (text) config's length attributes in order,
    then the tokenizer's ``model_max_length`` unless unlimited, then 2048."""
    config = getattr(config, "text_config", None) or config
    for attribute in WINDOW_ATTRIBUTES:
        value = getattr(config, attribute, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != TOKENIZER_NO_LIMIT:
        return int(limit)
    return DEFAULT_MAX_LENGTH


@dataclass(frozen=True)
class TokenizedPair:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


class PairTokenizer:
    """lm-eval's tokenization of log-likelihood requests over a Hugging Face tokenizer.

    ``add_bos_token=None`` keeps the tokenizer's default for special tokens; True or False forces
    ``add_special_tokens`` to that value, as lm-eval's ``add_bos_token`` model argument does.
    """

    def __init__(self, tokenizer: Any, add_bos_token: bool | None = None) -> None:
        self.tokenizer = tokenizer
        self.add_bos_token = add_bos_token
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise ValueError("the tokenizer has neither a BOS nor an EOS token to stand in for an empty context")
        self.prefix_token_id = int(prefix)
        self._prefix_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, special tokens as lm-eval's ``tok_encode`` adds them."""
        default: dict[str, bool] = {} if self.add_bos_token is None else {"add_special_tokens": self.add_bos_token}
        # Text that already starts with the start-of-sequence string gets no second one.
        plain = [i for i, text in enumerate(texts) if self._prefix_text and text.startswith(self._prefix_text)]
        out: list[list[int]] = [[] for _ in texts]
        for indices, options in ((plain, {"add_special_tokens": False}), (None, default)):
            if indices is None:
                skip = set(plain)
                indices = [i for i in range(len(texts)) if i not in skip]
            if indices:
                encoded = self.tokenizer([texts[i] for i in indices], **options)["input_ids"]
                for i, ids in zip(indices, encoded, strict=True):
                    out[i] = list(ids)
        return out

    def pairs(self, requests: Sequence[tuple[str, str]]) -> list[TokenizedPair]:
        """Every request as (context tokens, continuation tokens); each distinct string is encoded once."""
        split = [move_trailing_whitespace(c, k) if c else (c, k) for c, k in requests]
        texts = list(dict.fromkeys(t for c, k in split if c for t in (c, c + k)))
        ids = dict(zip(texts, self.encode(texts), strict=True))
        bare = list(dict.fromkeys(k for c, k in split if not c))
        bare_encoded = self.tokenizer(bare, add_special_tokens=False)["input_ids"] if bare else []
        bare_ids = dict(zip(bare, bare_encoded, strict=True))
        out = []
        for context, continuation in split:
            if context:
                head = ids[context]
                tail = ids[context + continuation][len(head) :]
            else:
                tail = list(bare_ids[continuation])
                if tail and tail[0] == self.prefix_token_id:
                    head, tail = tail[:1], tail[1:]
                else:
                    head = [self.prefix_token_id]
            if not tail:
                raise ValueError(f"the continuation {continuation!r} adds no token to its context")
            out.append(TokenizedPair(tuple(head), tuple(tail)))
        return out

    def details(self) -> dict[str, Any]:
        """The tokenizer and options behind the scores, for results.json."""
        probe = self.encode(["a"])[0]
        bos = self.tokenizer.bos_token_id
        return {
            "tokenization": "local",
            "tokenizer": str(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__),
            "tokenizer_class": type(self.tokenizer).__name__,
            "add_bos_token": "tokenizer default" if self.add_bos_token is None else self.add_bos_token,
            "start_of_sequence_added": bool(probe) and bos is not None and probe[0] == bos,
            "prefix_token_id": self.prefix_token_id,
            "continuation_split": SPLIT_RULE,
        }


@dataclass(frozen=True)
class Scored:
    """One request's place in a model input: its continuation is the input's last outputs."""

    request: int
    continuation: tuple[int, ...]


@dataclass
class Row:
    """One distinct model input and every request read from its outputs."""

    tokens: tuple[int, ...]
    scored: list[Scored]

    @property
    def first_scored(self) -> int:
        """The first input position whose output a request reads."""
        return len(self.tokens) - max(len(s.continuation) for s in self.scored)


def rows(pairs: Sequence[TokenizedPair], max_length: int) -> list[Row]:
    """Model inputs, one per distinct window: requests whose windows are equal (a shared context
    with one-token continuations) are read from one row, as lm-eval's one-token-continuation cache."""
    by_tokens: dict[tuple[int, ...], Row] = {}
    for index, pair in enumerate(pairs):
        if len(pair.continuation) > max_length:
            raise ValueError(
                f"a continuation of {len(pair.continuation)} tokens does not fit the model's window of {max_length}"
            )
        window = (pair.context + pair.continuation)[-(max_length + 1) :][:-1]
        by_tokens.setdefault(window, Row(window, [])).scored.append(Scored(index, pair.continuation))
    return list(by_tokens.values())


@dataclass
class PrefixGroup:
    """Rows whose first ``prefix`` tokens are equal and read nothing there: the prefix runs once."""

    prefix: int
    rows: list[Row]

    @property
    def saved_tokens(self) -> int:
        return (len(self.rows) - 1) * self.prefix


def prefix_groups(all_rows: Sequence[Row], min_saved: int) -> tuple[list[PrefixGroup], list[Row]]:
    """Rows sharing a leading token run, as (groups worth a cached prefix, the other rows).

    In token order, rows with a common prefix (the choices of one question, the questions after
    one few-shot block) are adjacent, and a run of rows shares the smallest prefix between
    neighbours (never reaching a position that is read). A run is split at that smallest prefix
    when its two halves save more; a group must save more than ``min_saved`` tokens of compute,
    the price of its extra forward pass (below that one large padded batch is cheaper).
    """
    ordered = sorted(all_rows, key=lambda row: row.tokens)
    shared = [
        min(_common_prefix(a.tokens, b.tokens), a.first_scored, b.first_scored)
        for a, b in itertools.pairwise(ordered)
    ]
    # Bottom-up over the runs (an explicit stack: runs nest as deep as there are rows).
    plans: dict[tuple[int, int], tuple[int, list[tuple[int, int, int]]]] = {}
    stack = [(0, len(ordered), False)]
    while stack:
        start, end, halves_done = stack.pop()
        if end - start < 2:
            plans[start, end] = (0, [])
            continue
        cut = min(range(start, end - 1), key=shared.__getitem__)
        if not halves_done:
            stack += [(start, end, True), (start, cut + 1, False), (cut + 1, end, False)]
            continue
        left, right = plans.pop((start, cut + 1)), plans.pop((cut + 1, end))
        whole = (end - start - 1) * shared[cut] - min_saved
        if whole > 0 and whole > left[0] + right[0]:
            plans[start, end] = (whole, [(start, end, shared[cut])])
        else:
            plans[start, end] = (left[0] + right[0], left[1] + right[1])
    chosen = plans[0, len(ordered)][1] if ordered else []
    groups = [PrefixGroup(prefix, ordered[start:end]) for start, end, prefix in chosen]
    grouped = {i for start, end, _ in chosen for i in range(start, end)}
    return groups, [row for i, row in enumerate(ordered) if i not in grouped]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def loglikelihood_details(backend: Any) -> dict[str, Any] | None:
    """What a backend's log-likelihoods rest on (tokenizer, options, split rule), when it says."""
    describe = getattr(backend, "loglikelihood_details", None)
    return describe() if callable(describe) else None
