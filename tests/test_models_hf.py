"""The local transformers backend on a tiny random-weight GPT-2 and a word-level tokenizer built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers
import torch
import transformers

from evalstack.models import GenerateRequest, Loglikelihood, LoglikelihoodRequest, load_backend

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
