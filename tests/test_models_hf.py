"""The local transformers backend on a tiny random-weight GPT-2 and a word-level tokenizer built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers
import torch
import transformers

from evalstack.models import GenerateRequest, Loglikelihood, LoglikelihoodRequest, load_backend, parse_model_reference
from evalstack.models.loglikelihood_tokens import TokenizedPair, prefix_groups, rows

WORDS = ["<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "dog", "ran", "a", "red", "blue"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = {word: index for index, word in enumerate(WORDS)}
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    raw.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(1)  # a seed whose greedy continuation of 'the cat' is not EOS
    config = transformers.GPT2Config(
        vocab_size=len(WORDS), n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _direct(path: Path, context: list[str], continuation: list[str]) -> tuple[float, bool]:
    model = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    ids = [WORDS.index(w) for w in context + continuation]
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]])).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    total, greedy = 0.0, True
    for position in range(len(context), len(ids)):
        row = logprobs[position - 1]
        total += float(row[ids[position]])
        greedy = greedy and int(row.argmax()) == ids[position]
    return total, greedy


def test_loglikelihood_equals_a_direct_torch_computation(tiny_model: Path) -> None:
    backend = load_backend(f"hf:{tiny_model}")
    assert backend.supports_loglikelihood
    cases = [
        (["the", "cat"], ["sat", "on", "the", "mat"]),
        (["a", "red"], ["dog", "ran"]),
        (["the", "cat"], ["cat", "cat"]),
    ]
    scores = backend.loglikelihood(
        [LoglikelihoodRequest(" ".join(context), " " + " ".join(cont)) for context, cont in cases]
    )
    direct = [_direct(tiny_model, context, continuation) for context, continuation in cases]
    assert [greedy for _, greedy in direct] == [False, False, True]  # both branches are exercised
    for score, (_context, continuation), (logprob, greedy) in zip(scores, cases, direct, strict=True):
        assert score.num_tokens == len(continuation)
        assert score.is_greedy == greedy
        assert score.logprob == pytest.approx(logprob, abs=1e-5)


def test_empty_context_uses_the_eos_token(tiny_model: Path) -> None:
    backend = load_backend(f"hf:{tiny_model}")
    [score] = backend.loglikelihood([LoglikelihoodRequest("", "the cat")])
    logprob, greedy = _direct(tiny_model, ["<eos>"], ["the", "cat"])
    assert score == Loglikelihood(pytest.approx(logprob, abs=1e-5), greedy, 2)


def test_greedy_generation_matches_argmax_decoding(tiny_model: Path) -> None:
    backend = load_backend(f"hf:{tiny_model}")
    [text] = backend.generate([GenerateRequest(prompt="the cat", max_tokens=4)])
    model = transformers.GPT2LMHeadModel.from_pretrained(tiny_model).eval()
    ids = [WORDS.index("the"), WORDS.index("cat")]
    for _ in range(4):
        with torch.no_grad():
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if token == 0:  # EOS ends generation
            break
        ids.append(token)
    expected = " ".join(WORDS[i] for i in ids[2:])
    assert text == expected == "cat cat cat cat"
    assert backend.stats().requests_sent == 1


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a local model directory"):
        load_backend(f"hf:{tmp_path / 'nope'}")


def test_batches_shrink_when_an_allocation_fails(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = [
        LoglikelihoodRequest(f"the {a} sat on", f" the {b}") for a in ("cat", "dog", "mat") for b in ("mat", "cat")
    ]
    expected = load_backend(f"hf:{tiny_model}").loglikelihood(requests)
    backend = load_backend(f"hf:{tiny_model}")
    backend.batch_tokens = 10_000
    forward = backend.model.forward
    refused: list[int] = []

    def short_of_memory(input_ids: torch.Tensor, **kwargs: object) -> object:
        if input_ids.shape[0] > 2:  # as the CPU allocator fails on a batch too big for free memory
            refused.append(input_ids.shape[0])
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory")
        return forward(input_ids, **kwargs)

    monkeypatch.setattr(backend.model, "forward", short_of_memory)
    scores = backend.loglikelihood(requests)
    assert refused and backend.batch_tokens < 10_000
    assert [s.logprob for s in scores] == pytest.approx([e.logprob for e in expected], abs=1e-5)
    assert [s.is_greedy for s in scores] == [e.is_greedy for e in expected]


def test_other_runtime_errors_are_not_taken_for_memory(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = load_backend(f"hf:{tiny_model}")

    def broken(input_ids: torch.Tensor, **kwargs: object) -> object:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(backend.model, "forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        backend.loglikelihood([LoglikelihoodRequest("the cat", " sat"), LoglikelihoodRequest("a red", " dog")])


def _plan(neighbour_shares: int, min_saved: int) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Prefix groups (prefix, first request of each row) and ungrouped rows of five requests."""
    shared = tuple(range(100, 140))  # a 40-token context
    pairs = [TokenizedPair(shared, (1,)), TokenizedPair(shared, (2,)), TokenizedPair(shared, (3, 4))]
    neighbour = shared[:neighbour_shares] + (7,) * (40 - neighbour_shares)
    pairs += [TokenizedPair(neighbour, (5,)), TokenizedPair((9, 9), (1, 2))]
    planned = rows(pairs, max_length=64)
    # The two one-token continuations of the same context are read from one row.
    assert [[s.request for s in row.scored] for row in planned] == [[0, 1], [2], [3], [4]]
    groups, single = prefix_groups(planned, min_saved)
    return [(g.prefix, [r.scored[0].request for r in g.rows]) for g in groups], [r.scored[0].request for r in single]


def test_requests_with_equal_windows_share_a_row_and_long_prefixes_a_group() -> None:
    # Rows 0-1 and 2 share the context up to its last token (position 39 predicts the first
    # continuation token): caching saves 39 tokens. Taking in the row sharing 18 tokens would
    # save 2 * 18 = 36, less; one sharing 30 would save 60, more.
    assert _plan(18, min_saved=20) == ([(39, [0, 2])], [4, 3])
    assert _plan(30, min_saved=20) == ([(30, [3, 0, 2])], [4])
    assert _plan(18, min_saved=40) == ([], [4, 3, 0, 2])  # nothing saves more than a pass costs
    with pytest.raises(ValueError, match="does not fit the model's window of 1"):
        rows([TokenizedPair((1,), (2, 3))], max_length=1)


def test_empty_context_uses_the_bos_token_unless_the_continuation_starts_with_it(tiny_model: Path) -> None:
    backend = load_backend(f"hf:{tiny_model}")
    eos = WORDS.index("<eos>")
    assert backend.encoder.pairs([("", "the cat"), ("", "<eos> the cat")]) == [
        TokenizedPair((eos,), (WORDS.index("the"), WORDS.index("cat"))),
        TokenizedPair((eos,), (WORDS.index("the"), WORDS.index("cat"))),
    ]


def test_add_bos_token_reference_option() -> None:
    assert parse_model_reference("hf:/models/m?add_bos_token=false").add_bos_token is False
    assert parse_model_reference("hf:/models/m?add_bos_token=true").canonical == "hf:/models/m?add_bos_token=true"
    assert parse_model_reference("hf:/models/m").add_bos_token is None
    with pytest.raises(ValueError, match="add_bos_token='yes' is not one of true, false"):
        parse_model_reference("hf:/models/m?add_bos_token=yes")
    with pytest.raises(ValueError, match="unknown option 'bos'"):
        parse_model_reference("hf:/models/m?bos=true")
