"""The local transformers backend's log-likelihoods equal lm-evaluation-harness's own ``HFLM`` on the
same requests, for two tokenizer families trained here on the benchmark text (tests/support/tiny_lm.py:
GPT-2's byte-level BPE, and SentencePiece-style pieces with ``<s>`` added by default, as Llama-2's).

Each model has seeded random weights. For ARC-Easy, MMLU 0- and 5-shot, HellaSwag, WinoGrande and
TruthfulQA (mc1 and mc2 answers), the requests the benchmark task makes are scored through the
task with evalstack's backend and, in-process, with ``HFLM.loglikelihood``; every document's
log-likelihoods must agree. A short-window variant makes both cut MMLU 5-shot prompts from the left.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalstack.benchmarks.source import open_source
from evalstack.benchmarks.task import BenchmarkTask
from evalstack.models import load_backend
from evalstack.models.base import LoglikelihoodRequest
from evalstack.models.hf_local import HFBackend
from evalstack.models.loglikelihood_tokens import PairTokenizer, move_trailing_whitespace, prefix_groups, rows
from evalstack.models.reference import ModelReference
from tests.support.openai_server import Reply, completion_body, serve
from tests.support.scripted_benchmarks import backend as server_backend
from tests.support.scripted_benchmarks import benchmark_spec, run
from tests.support.tiny_lm import FAMILIES, TinyModel, build

FIXTURES = Path(__file__).parent / "fixtures"
# (label, benchmark, subtasks, hyperparameters): small slices keep the test fast.
TASKS = [
    ("arc_easy", "ARC", ["easy"], {"limit": 10}),
    ("mmlu_0shot", "MMLU", ["abstract_algebra", "anatomy"], {"limit": 10, "num_fewshot": 0}),
    ("mmlu_5shot", "MMLU", ["abstract_algebra", "anatomy"], {"limit": 10, "num_fewshot": 5}),
    ("hellaswag", "HellaSwag", None, {"limit": 10}),
    ("winogrande", "WinoGrande", None, {"limit": 12}),
    ("truthfulqa_mc2", "TruthfulQA", None, {"limit": 6}),
]
ABS = 1e-4  # float rounding of batched and prefix-cached products; a token's difference is ~1 nat


def _data_root(benchmark_data: Path, benchmark: str) -> Path:
    if benchmark == "HellaSwag" and not (benchmark_data / "hellaswag").is_dir():
        # The shared data has no HellaSwag; the in-repo fixture keeps the original layout.
        return next(root for root in (FIXTURES / "benchmarks", FIXTURES) if (root / "hellaswag").is_dir())
    return benchmark_data


def _task(benchmark_data: Path, benchmark: str, subtasks: list[str] | None, hp: dict) -> BenchmarkTask:
    source = open_source(str(_data_root(benchmark_data, benchmark)))
    return BenchmarkTask(benchmark_spec(benchmark, subtasks, **hp), "candidate", source=source)


def _asked(task: BenchmarkTask, item) -> list[tuple[str, str]]:
    """The (context, continuation) pairs the task asks for ``item``, in its order."""
    definition = task.definition
    return definition.ll_requests(item.data, definition.shots_prefix(task.shots(item.subtask), item.subtask))


@pytest.fixture(scope="module")
def requests_by_task(benchmark_data: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for label, benchmark, subtasks, hp in TASKS:
        task = _task(benchmark_data, benchmark, subtasks, hp)
        pairs = [pair for item in task.items() for pair in _asked(task, item)]
        out[label] = list(dict.fromkeys(pairs))
    return out


def _training_text(requests_by_task: dict[str, list[tuple[str, str]]]) -> list[str]:
    return [context + continuation for pairs in requests_by_task.values() for context, continuation in pairs]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request: pytest.FixtureRequest, requests_by_task, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    texts = _training_text(requests_by_task)
    return build(request.param, texts, tmp_path_factory.mktemp(f"tiny-{request.param}"), window=4096)


def _lm_eval(tiny: TinyModel, pairs: list[tuple[str, str]], **options) -> list[tuple[float, bool]]:
    """lm-eval's own ``HFLM.loglikelihood`` (batch size 1, its default) on the in-memory model."""
    # lm-eval is the bench extra (its HFLM also imports accelerate); CI installs both.
    huggingface = pytest.importorskip("lm_eval.models.huggingface", reason="needs lm-eval[hf] (the bench extra)")
    from lm_eval.api.instance import Instance

    options = {"tokenizer": tiny.tokenizer, **options}
    lm = huggingface.HFLM(pretrained=tiny.model, batch_size=1, device="cpu", **options)
    instances = [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(pairs)]
    return lm.loglikelihood(instances, disable_tqdm=True)


def test_the_two_tokenizer_families_differ_as_lm_eval_expects(tiny: TinyModel) -> None:
    # What makes the Llama family hard: a lone leading space becomes its own piece, and <s> is added.
    ids = tiny.tokenizer("Answer: A")["input_ids"]
    alone = tiny.tokenizer(" A", add_special_tokens=False)["input_ids"]
    if tiny.family == "llama":
        assert ids[0] == tiny.tokenizer.bos_token_id
        assert tiny.tokenizer.convert_ids_to_tokens(alone) == ["▁", "▁A"]
        assert tiny.tokenizer.convert_ids_to_tokens(ids[-1:]) == ["▁A"]
    else:
        assert ids[0] != tiny.tokenizer.bos_token_id
        assert tiny.tokenizer.convert_ids_to_tokens(alone) == ["ĠA"]


@pytest.mark.parametrize("label", [t[0] for t in TASKS])
def test_task_loglikelihoods_equal_lm_eval_hflm(
    label: str, tiny: TinyModel, benchmark_data: Path, requests_by_task
) -> None:
    _, benchmark, subtasks, hp = next(t for t in TASKS if t[0] == label)
    task = _task(benchmark_data, benchmark, subtasks, hp)
    backend = HFBackend(ModelReference(kind="hf", target=str(tiny.path)))
    items = task.items()
    records = task.run(items, backend)

    pairs = requests_by_task[label]
    theirs = dict(zip(pairs, _lm_eval(tiny, pairs), strict=True))
    for item, record in zip(items, records, strict=True):
        expected = [theirs[pair][0] for pair in _asked(task, item)]
        assert record["loglikelihoods"] == pytest.approx(expected, abs=ABS, rel=0), item.id
    # is_greedy too, on the backend's own results for the same requests.
    mine = backend.loglikelihood([LoglikelihoodRequest(c, k) for c, k in pairs])
    assert [m.is_greedy for m in mine] == [theirs[pair][1] for pair in pairs]
    details = backend.loglikelihood_details()
    assert details["tokenizer"] == str(tiny.path)
    assert task.aggregate(records).details["tokenization"] == details  # what results.json carries
    assert details["start_of_sequence_added"] is (tiny.family == "llama")


def test_add_bos_token_option_equals_lm_eval_argument(tiny: TinyModel, requests_by_task) -> None:
    pairs = requests_by_task["arc_easy"][:12]
    flipped = tiny.family == "gpt2"  # force the opposite of the tokenizer's default
    backend = load_backend(f"hf:{tiny.path}?add_bos_token={str(flipped).lower()}")
    mine = backend.loglikelihood([LoglikelihoodRequest(c, k) for c, k in pairs])
    # lm-eval loads the tokenizer itself here, as from the command line: add_bos_token reaches
    # AutoTokenizer.from_pretrained as well as every encode call.
    theirs = _lm_eval(tiny, pairs, tokenizer=str(tiny.path), add_bos_token=flipped)
    assert [m.logprob for m in mine] == pytest.approx([t[0] for t in theirs], abs=ABS, rel=0)
    assert [m.is_greedy for m in mine] == [t[1] for t in theirs]
    [first] = backend.encoder.pairs(pairs[:1])
    assert (first.context[0] == tiny.tokenizer.bos_token_id) is flipped
    assert backend.loglikelihood_details()["add_bos_token"] is flipped


@pytest.mark.parametrize("family", FAMILIES)
def test_left_truncation_to_a_short_window_equals_lm_eval(family: str, requests_by_task, tmp_path: Path) -> None:
    short = build(family, _training_text(requests_by_task), tmp_path / family, window=128)
    pairs = requests_by_task["mmlu_5shot"][:16]
    encoder = PairTokenizer(short.tokenizer)
    assert all(len(p.context) > 128 for p in encoder.pairs(pairs))  # every prompt is cut
    backend = HFBackend(ModelReference(kind="hf", target=str(short.path)))
    mine = backend.loglikelihood([LoglikelihoodRequest(c, k) for c, k in pairs])
    theirs = _lm_eval(short, pairs)
    assert [m.logprob for m in mine] == pytest.approx([t[0] for t in theirs], abs=ABS, rel=0)
    assert [m.is_greedy for m in mine] == [t[1] for t in theirs]


def test_empty_context_and_trailing_whitespace_equal_lm_eval(tiny: TinyModel) -> None:
    pairs = [
        ("", "The answer is A."),
        ("Question: which is red?\nAnswer: ", "the apple"),  # trailing space moves to the continuation
        ("Question: which is red?\nAnswer:\n\n", "the apple"),
        (tiny.tokenizer.decode(PairTokenizer(tiny.tokenizer).prefix_token_id) + "Question:", " yes"),
    ]
    assert move_trailing_whitespace(pairs[1][0], pairs[1][1]) == ("Question: which is red?\nAnswer:", " the apple")
    backend = HFBackend(ModelReference(kind="hf", target=str(tiny.path)))
    mine = backend.loglikelihood([LoglikelihoodRequest(c, k) for c, k in pairs])
    theirs = _lm_eval(tiny, pairs)
    assert [m.logprob for m in mine] == pytest.approx([t[0] for t in theirs], abs=ABS, rel=0)
    assert [m.is_greedy for m in mine] == [t[1] for t in theirs]


def test_shared_contexts_use_fewer_forward_passes(tiny: TinyModel, requests_by_task) -> None:
    # MMLU 5-shot: four one-letter continuations per question read from one row, and the questions
    # of a subject share the few-shot block, which runs once as a cached prefix.
    pairs = requests_by_task["mmlu_5shot"]
    encoded = PairTokenizer(tiny.tokenizer).pairs(pairs)
    planned = rows(encoded, 4096)
    assert len(planned) == len(pairs) // 4
    groups, single = prefix_groups(planned, 256)
    assert len(groups) == 2 and not single  # per subject, its questions after its five shots
    assert all(g.prefix > 100 for g in groups)
    backend = HFBackend(ModelReference(kind="hf", target=str(tiny.path)))
    backend.loglikelihood([LoglikelihoodRequest(c, k) for c, k in pairs])
    # A prefix per group, then batches of rows: fewer passes than rows.
    assert len(groups) < backend.stats().extra["forward_passes"] < len(planned)
    assert json.dumps(backend.loglikelihood_details())  # plain JSON for results.json


def _echo(prompt: str, pieces: list[str], logprobs: list[float]) -> Reply:
    """An echo completion of ``prompt`` tokenized into ``pieces`` (their texts join to the prompt)."""
    assert "".join(pieces) == prompt
    offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    body = {
        "tokens": [*pieces, "<gen>"],
        "token_logprobs": [None, *logprobs[1:], -0.1],
        "top_logprobs": [None, *({p: v} for p, v in zip(pieces[1:], logprobs[1:], strict=True)), {"<gen>": -0.1}],
        "text_offset": [*offsets, len(prompt)],
    }
    return Reply(completion_body(prompt + "<gen>", logprobs=body))


def test_server_echo_split_by_character_offsets_counts_trailing_context_whitespace() -> None:
    # The server tokenized "Answer: " + "Paris" as [..., ":", " ", "Paris"]: lm-eval moves the space
    # into the continuation, so the lone " " token is scored with "Paris".
    def script(path: str, body: dict) -> object:
        assert body["prompt"] == "Answer: Paris" and body["echo"] is True
        return _echo(body["prompt"], ["Answer", ":", " ", "Paris"], [0.0, -1.0, -0.5, -2.0])

    with serve(script) as server:
        [score] = server_backend(server.base_url, logprobs="echo").loglikelihood(
            [LoglikelihoodRequest("Answer: ", "Paris")]
        )
    assert (score.logprob, score.num_tokens) == (-2.5, 2)


def test_server_results_say_the_server_tokenized(benchmark_data: Path) -> None:
    def script(path: str, body: dict) -> object:
        prompt = body["prompt"]
        cut = prompt.index("\nAnswer:") + len("\nAnswer:")
        return _echo(prompt, [prompt[:cut], prompt[cut:]], [0.0, -float(len(prompt) % 7)])

    task = _task(benchmark_data, "ARC", ["easy"], {"limit": 4})
    with serve(script) as server:
        _, records, agg = run(task, server.base_url, logprobs="echo")
    assert len(records) == 4
    tokenization = agg.details["tokenization"]
    assert tokenization["tokenization"] == "server"
    assert tokenization["continuation_split"].startswith("character offsets")
