"""Multiple choice by log-likelihood (completions, echo=true, logprobs=1) on the real files, with
scripted echo logprobs: MMLU, ARC, HellaSwag (fixture), WinoGrande and TruthfulQA."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from evalstack.benchmarks.task import BenchmarkTask
from tests.conftest import FIXTURE_DATA
from tests.support.openai_server import serve
from tests.support.scripted_benchmarks import benchmark_spec, echo_reply, run


def test_mmlu_five_shot_loglikelihood_micro_average(benchmark_data: Path) -> None:
    subjects = ["abstract_algebra", "anatomy", "astronomy"]
    gold: dict[str, str] = {}
    for subject in subjects:
        with open(benchmark_data / "mmlu" / "test" / f"{subject}_test.csv", newline="") as handle:
            for row in csv.reader(handle):
                gold[row[0].strip()] = row[5]

    def preferred(question: str) -> str:
        # Right when the question's length is not a multiple of 3; otherwise the next letter.
        right = gold[question]
        return right if len(question) % 3 else "ABCD"[("ABCD".index(right) + 1) % 4]

    def script(path: str, body: dict) -> object:
        prompt = body["prompt"]
        assert body["echo"] is True and body["logprobs"] == 1
        letter = prompt[-1]
        block = prompt[: -len(" X")].rsplit("\n\n", 1)[1]
        question = block.rsplit("\nA. ", 1)[0]
        return echo_reply(prompt, f" {letter}", -0.5 if letter == preferred(question) else -2.0)

    task = BenchmarkTask(benchmark_spec("MMLU", subjects, limit=20), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url, logprobs="echo")
        prompts = [body["prompt"] for _, body in server.requests]

    # 20 split over 100/135/152 questions by largest remainder: 5.17, 6.98, 7.86 -> 5, 7, 8.
    assert agg.details["subtask_sizes"] == {"abstract_algebra": 5, "anatomy": 7, "astronomy": 8}
    expected = [1.0 if len(it.data["question"]) % 3 else 0.0 for it in items]
    assert [r["scores"] for r in records] == [{"acc": e} for e in expected]
    assert agg.metrics == {"acc": sum(expected) / 20}  # micro average over questions
    for subject in subjects:
        mine = [e for e, it in zip(expected, items, strict=True) if it.subtask == subject]
        assert agg.subtasks[subject]["acc"] == sum(mine) / len(mine)
    assert agg.details["scoring_mode"] == "loglikelihood"
    assert len(prompts) == 80  # 4 letters per question
    with open(benchmark_data / "mmlu" / "dev" / "abstract_algebra_dev.csv", newline="") as handle:
        dev = list(csv.reader(handle))
    shots = "".join(f"{r[0].strip()}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer: {r[5]}\n\n" for r in dev)
    header = "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    assert any(p.startswith(header + shots) for p in prompts)


def test_mmlu_group_stderr_matches_lm_eval_pooled_formula() -> None:
    from lm_eval.api import metrics

    from evalstack.benchmarks.task import aggregate_records

    pattern = {"a": [1, 0, 1, 1], "b": [0, 0, 1], "c": [1, 1, 0, 1, 0]}
    records = [
        {"id": f"{s}/{i}", "subtask": s, "scores": {"acc": float(v)}, "mode": "loglikelihood"}
        for s, values in pattern.items()
        for i, v in enumerate(values)
    ]
    agg = aggregate_records("MMLU", records, 5)
    stderrs = [metrics.mean_stderr([float(v) for v in values]) for values in pattern.values()]
    sizes = [len(values) for values in pattern.values()]
    assert agg.metrics["acc"] == 7 / 12
    assert agg.stderr["acc"] == pytest.approx(metrics.pooled_sample_stderr(stderrs, sizes), rel=1e-12)
    assert agg.subtasks["b"]["acc_stderr"] == pytest.approx(stderrs[1], rel=1e-12)


def test_arc_acc_and_acc_norm(benchmark_data: Path) -> None:
    choices: dict[str, tuple[list[str], int]] = {}
    for folder in ("ARC-Easy", "ARC-Challenge"):
        for line in (benchmark_data / "arc" / folder / f"{folder}-Test.jsonl").read_text().splitlines():
            row = json.loads(line)
            labels = [c["label"] for c in row["question"]["choices"]]
            texts = [c["text"] for c in row["question"]["choices"]]
            choices[row["question"]["stem"]] = (texts, labels.index(row["answerKey"]))

    def loglikelihood(question: str, choice: str) -> float:
        # The gold choice costs 0.1 per character, the others 0.2: acc_norm always picks gold,
        # acc picks gold only when it is shorter than twice every other choice.
        texts, gold = choices[question]
        return -len(choice) * (0.1 if choice == texts[gold] else 0.2)

    def script(path: str, body: dict) -> object:
        prompt = body["prompt"]
        question = prompt.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
        choice = prompt.split("\nAnswer: ", 1)[1]
        return echo_reply(prompt, f" {choice}", loglikelihood(question, choice))

    task = BenchmarkTask(benchmark_spec("ARC", limit=30), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url, logprobs="echo")

    def expected_acc(question: str) -> float:
        texts, gold = choices[question]
        return float(all(len(texts[gold]) < 2 * len(t) for i, t in enumerate(texts) if i != gold))

    acc = [expected_acc(it.data["query"][len("Question: ") : -len("\nAnswer:")]) for it in items]
    assert agg.details["subtask_sizes"] == {"challenge": 10, "easy": 20}
    assert [r["scores"] for r in records] == [{"acc": a, "acc_norm": 1.0} for a in acc]
    assert agg.metrics == {"acc": sum(acc) / 30, "acc_norm": 1.0}
    assert 0 < sum(acc) < 30


@pytest.fixture
def hellaswag_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "benchmarks"
    # Its own root: the full data (shared/benchmarks) has no HellaSwag, only the in-repo fixture has.
    shutil.copytree(FIXTURE_DATA / "hellaswag", root / "hellaswag")
    monkeypatch.setenv("EVALSTACK_BENCHMARK_DATA", str(root))
    return root


def test_hellaswag_preprocessing_and_scores(hellaswag_root: Path) -> None:
    rows = [
        json.loads(line) for line in (hellaswag_root / "hellaswag" / "hellaswag_val.jsonl").read_text().splitlines()
    ]

    def script(path: str, body: dict) -> object:
        prompt = body["prompt"]
        # Prefer ending 0 always: right exactly for the records whose label is 0.
        index = next(i for i, row in enumerate(rows) if prompt.startswith(row["activity_label"] + ":"))
        endings = server_endings[index]
        ending = next(e for e in sorted(endings, key=len, reverse=True) if prompt.endswith(" " + e))
        return echo_reply(prompt, " " + ending, -1.0 if ending == endings[0] else -3.0)

    task = BenchmarkTask(benchmark_spec("HellaSwag"), "candidate")
    server_endings = [[item.data["choices"][i] for i in range(4)] for item in task.items()]
    with serve(script) as server:
        items, records, agg = run(task, server.base_url, logprobs="echo")
        prompts = {body["prompt"] for _, body in server.requests}

    assert len(items) == 20
    acc = [1.0 if r["label"] == 0 else 0.0 for r in rows]
    # acc_norm: the argmax (first on ties) of loglikelihood / len(ending); ending 0 has -1, the others -3.
    acc_norm = []
    for item, row in zip(items, rows, strict=True):
        normed = [(-1.0 if i == 0 else -3.0) / len(e) for i, e in enumerate(item.data["choices"])]
        acc_norm.append(1.0 if normed.index(max(normed)) == row["label"] else 0.0)
    assert [r["scores"] for r in records] == [{"acc": a, "acc_norm": n} for a, n in zip(acc, acc_norm, strict=True)]
    assert agg.metrics == {"acc": sum(acc) / 20, "acc_norm": sum(acc_norm) / 20}
    # lm-eval's preprocessing: ctx_b.capitalize() lower-cases the rest of ctx_b, " [title]" becomes ". ",
    # other [..] markers vanish, one round of double spaces collapses; the ending keeps the space left
    # by "[substeps] ", so the continuation starts with two spaces.
    assert (
        "Home and Garden: How to water a cactus. Check the soil first. push a finger into the soil to feel "
        "whether it is dry.  Only water the cactus when the top inch is completely dry."
    ) in prompts
    assert (
        "Washing dishes: A man stands at a kitchen sink filled with soapy water. He scrubs a plate with a "
        "sponge and rinses it under the tap."
    ) in prompts


def test_winogrande_partial_scoring(benchmark_data: Path) -> None:
    rows = [json.loads(line) for line in (benchmark_data / "winogrande" / "dev.jsonl").read_text().splitlines()]
    # Twin sentences share a prefix, so requests are looked up by the whole prompt.
    by_prompt: dict[str, tuple[str, float]] = {}
    for row in rows:
        blank = row["sentence"].index("_")
        continuation = " " + row["sentence"][blank + 1 :].strip()
        for option, score in ((row["option1"], -1.0), (row["option2"], -2.0)):
            by_prompt[row["sentence"][:blank] + option + continuation] = (continuation, score)

    def script(path: str, body: dict) -> object:
        continuation, score = by_prompt[body["prompt"]]
        return echo_reply(body["prompt"], continuation, score)

    task = BenchmarkTask(benchmark_spec("WinoGrande", limit=30), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url, logprobs="echo")
        seen = len(server.requests)

    by_id = {r["qID"]: r for r in rows}
    acc, acc_norm = [], []
    for item in items:
        row = by_id[item.id.split("/", 1)[1]]
        blank = row["sentence"].index("_")
        acc.append(1.0 if row["answer"] == "1" else 0.0)
        # acc_norm divides by the length of lm-eval's choice, the context up to and including the option.
        first, second = (len(row["sentence"][:blank] + row[f"option{k}"]) for k in (1, 2))
        pred_norm = "1" if -1.0 / first >= -2.0 / second else "2"
        acc_norm.append(1.0 if row["answer"] == pred_norm else 0.0)
    assert seen == 60
    assert [r["scores"] for r in records] == [{"acc": a, "acc_norm": n} for a, n in zip(acc, acc_norm, strict=True)]
    assert agg.metrics == {"acc": sum(acc) / 30, "acc_norm": sum(acc_norm) / 30}


def test_truthfulqa_mc1_mc2(benchmark_data: Path) -> None:
    data = json.loads((benchmark_data / "truthfulqa" / "data" / "mc_task.json").read_text())
    index = {row["question"]: i for i, row in enumerate(data)}

    def loglikelihood(question: str, answer: str) -> float:
        row = data[index[question]]
        true = row["mc2_targets"].get(answer, row["mc1_targets"].get(answer)) == 1
        if index[question] % 2:  # odd items: the model prefers false answers
            true = not true
        return -1.0 if true else -2.5

    def script(path: str, body: dict) -> object:
        prompt = body["prompt"]
        question = prompt.rsplit("\n\nQ: ", 1)[1].split("\nA:", 1)[0]
        answer = prompt.rsplit("\nA: ", 1)[1]
        return echo_reply(prompt, " " + answer, loglikelihood(question, answer))

    task = BenchmarkTask(benchmark_spec("TruthfulQA", limit=20), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url, logprobs="echo")
        requested = [body["prompt"] for _, body in server.requests]

    mc1, mc2 = [], []
    for item in items:
        i = int(item.id.rsplit("-", 1)[1])
        row = data[i]
        mc1.append(0.0 if i % 2 else 1.0)
        labels = list(row["mc2_targets"].values())
        t, f = labels.count(1), labels.count(0)
        p_true, p_false = (math.exp(-2.5), math.exp(-1.0)) if i % 2 else (math.exp(-1.0), math.exp(-2.5))
        mc2.append(t * p_true / (t * p_true + f * p_false))
    assert [r["scores"]["mc1"] for r in records] == mc1
    assert [r["scores"]["mc2"] for r in records] == pytest.approx(mc2, rel=1e-12)
    assert agg.metrics["mc1"] == sum(mc1) / 20
    assert agg.metrics["mc2"] == pytest.approx(sum(mc2) / 20, rel=1e-12)
    # mc1 and mc2 share answer texts: each (context, continuation) is asked once.
    assert len(requested) == len(set(requested))
    assert requested[0].startswith("Q: What is human life expectancy in the United States?\n")
