"""Multiple choice without log-likelihoods (chat API, logprobs=none): lettered options in the prompt
and the answer letter extracted from varied reply formats. PIQA, BoolQ, RACE and MMLU."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

from evalstack.benchmarks.task import BenchmarkTask
from evalstack.task import Item
from tests.support.openai_server import serve
from tests.support.scripted_benchmarks import benchmark_spec, run

LETTERS = "ABCDE"


def reply(fmt: int, gold: int, options: list[str]) -> str:
    wrong = (gold + 1) % len(options)
    return [
        LETTERS[gold],  # a bare letter: right
        f"The answer is ({LETTERS[gold]}).",  # right
        f"{LETTERS[wrong]}. {options[wrong]}",  # a lettered line: wrong
        "I cannot decide between these.",  # no letter: parse failure, wrong
        f"Answer: {LETTERS[gold]}",  # right
    ][fmt]


RIGHT = {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0, 4: 1.0}


def options_of(prompt: str) -> list[str]:
    """The lettered options at the end of the last user message."""
    tail = prompt.rsplit("\nAnswer:", 1)[0]
    found = re.findall(r"\n([A-E])\. (.*)", tail)
    letters = [letter for letter, _ in found]
    start = len(letters) - 1 - letters[::-1].index("A")
    return [text for _, text in found[start:]]


def scripted(gold_of: Callable[[str, list[str]], tuple[int, int]]) -> Callable[[str, dict], str]:
    def script(path: str, body: dict) -> str:
        assert path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"]
        options = options_of(prompt)
        fmt, gold = gold_of(prompt, options)
        return reply(fmt, gold, options)

    return script


def check(task: BenchmarkTask, script: Callable[[str, dict], str], fmt_gold: Callable[..., int], metric: str) -> None:
    with serve(script) as server:
        items, records, agg = run(task, server.base_url, api="chat")
    expected = [RIGHT[fmt_gold(item)] for item in items]
    assert [r["scores"] for r in records] == [{metric: e} for e in expected]
    assert agg.metrics == {metric: sum(expected) / len(expected)}
    assert agg.details["scoring_mode"] == "generate"
    assert agg.details["parse_failures"] == sum(1 for item in items if fmt_gold(item) == 3)
    assert 0 < sum(expected) < len(expected)


def test_piqa_lettered(benchmark_data: Path) -> None:
    rows = [json.loads(line) for line in (benchmark_data / "piqa" / "valid.jsonl").read_text().splitlines()]
    labels = (benchmark_data / "piqa" / "valid-labels.lst").read_text().split()
    index = {row["goal"]: i for i, row in enumerate(rows)}

    def gold_of(prompt: str, options: list[str]) -> tuple[int, int]:
        i = index[prompt.split("Question: ", 1)[1].rsplit("\nA. ", 1)[0]]
        return i % 5, int(labels[i])

    task = BenchmarkTask(benchmark_spec("PIQA", limit=20), "candidate")
    check(task, scripted(gold_of), lambda item: int(item.id.rsplit("-", 1)[1]) % 5, "acc")


def test_boolq_lettered(benchmark_data: Path) -> None:
    rows = [json.loads(line) for line in (benchmark_data / "boolq" / "val.jsonl").read_text().splitlines()]
    by_question = {(r["passage"], r["question"]): r for r in rows}

    def gold_of(prompt: str, options: list[str]) -> tuple[int, int]:
        assert options == ["no", "yes"]
        passage, question = prompt.rsplit("\nQuestion: ", 1)
        row = by_question[(passage, question.rsplit("?\nA. no", 1)[0])]
        return row["idx"] % 5, int(row["label"])

    task = BenchmarkTask(benchmark_spec("BoolQ", limit=20), "candidate")
    check(task, scripted(gold_of), lambda item: int(item.id.rsplit("-", 1)[1]) % 5, "acc")


def test_race_lettered_high_and_middle(benchmark_data: Path) -> None:
    gold: dict[tuple[str, tuple[str, ...]], tuple[int, int]] = {}
    for level in ("high", "middle"):
        for path in sorted((benchmark_data / "race" / "test" / level).glob("*.txt")):
            article = json.loads(path.read_text())
            for q, (question, options, answer) in enumerate(
                zip(article["questions"], article["options"], article["answers"], strict=True)
            ):
                gold[(question, tuple(options))] = ((int(path.stem) + q) % 5, "ABCD".index(answer))

    def gold_of(prompt: str, options: list[str]) -> tuple[int, int]:
        question = prompt.rsplit("\nQuestion: ", 1)[1].rsplit("\nA. ", 1)[0]
        return gold[(question, tuple(options))]

    def fmt_of(item: Item) -> int:
        stem, q = item.id.split("/")[-1].split("-q")
        return (int(stem) + int(q)) % 5

    task = BenchmarkTask(benchmark_spec("RACE", limit=30), "candidate")
    check(task, scripted(gold_of), fmt_of, "acc")
    assert {item.subtask for item in task.items()} == {"high", "middle"}


def test_mmlu_lettered_keeps_five_shots(benchmark_data: Path) -> None:
    gold: dict[str, int] = {}
    with open(benchmark_data / "mmlu" / "test" / "marketing_test.csv", newline="") as handle:
        for i, row in enumerate(csv.reader(handle)):
            gold[row[0].strip()] = (i % 5, "ABCD".index(row[5]))

    def gold_of(prompt: str, options: list[str]) -> tuple[int, int]:
        assert prompt.count("\nAnswer:") == 6  # 5 dev shots with their letters, then the question
        return gold[prompt.rsplit("\n\n", 1)[1].rsplit("\nA. ", 1)[0]]

    task = BenchmarkTask(benchmark_spec("MMLU", ["marketing"], limit=15), "candidate")
    check(task, scripted(gold_of), lambda item: int(item.id.rsplit("-", 1)[1]) % 5, "acc")
