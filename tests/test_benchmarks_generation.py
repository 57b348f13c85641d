"""GSM8K, BBH and MATH on the real files, against the loopback OpenAI server with scripted answers.

Each script answers some items right and some wrong, in the formats the harness rules treat
differently; the expected scores are worked out here from the script and those rules.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from evalstack.benchmarks.task import BenchmarkTask
from tests.support.openai_server import serve
from tests.support.scripted_benchmarks import benchmark_spec, run


def last_between(text: str, start: str, end: str) -> str:
    return text.rsplit(start, 1)[1].split(end, 1)[0]


# --- GSM8K -------------------------------------------------------------------------------------


def gsm8k_answer(fmt: int, gold: str) -> str:
    number = int(gold.replace(",", ""))
    return [
        f"Natalia sold {number} clips in total.\n#### {number}",  # strict right, flexible right
        f"The answer is {number}.",  # strict [invalid], flexible "42." -> "42": right
        f"So the result is {number + 1}.\n#### {number + 1}",  # both wrong
        f"That comes to ${number:,}.",  # flexible "$1,000." -> "1000": right; strict invalid
        f"#### {number:,}\nThat is {number + 7} minus 7.",  # strict "1,000" -> right; flexible takes "7": wrong
    ][fmt]


GSM8K_EXPECTED = {0: (1.0, 1.0), 1: (0.0, 1.0), 2: (0.0, 0.0), 3: (0.0, 1.0), 4: (1.0, 0.0)}


def test_gsm8k_both_filters_on_scripted_formats(benchmark_data: Path) -> None:
    rows = [json.loads(line) for line in (benchmark_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    gold_by_question = {r["question"]: r["answer"].split("#### ")[-1].strip() for r in rows}
    order = {q: i for i, q in enumerate(gold_by_question)}

    def script(path: str, body: dict) -> str:
        question = last_between(body["prompt"], "Question: ", "\nAnswer:")
        return gsm8k_answer(order[question] % 5, gold_by_question[question])

    task = BenchmarkTask(benchmark_spec("GSM8K", limit=25), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url)
        prompts = [body["prompt"] for _, body in server.requests]

    assert len(items) == 25
    expected = [GSM8K_EXPECTED[order[it.data["question"]] % 5] for it in items]
    assert [(r["scores"]["exact_match_strict"], r["scores"]["exact_match_flexible"]) for r in records] == expected
    strict = [e[0] for e in expected]
    flexible = [e[1] for e in expected]
    assert agg.metrics == {"exact_match_strict": sum(strict) / 25, "exact_match_flexible": sum(flexible) / 25}
    assert math.isclose(agg.stderr["exact_match_flexible"], statistics.stdev(flexible) / math.sqrt(25), rel_tol=1e-12)
    assert agg.details["scoring_mode"] == "generate"
    # 5-shot from train, first five, lm-eval's "Question: ...\nAnswer: ..." blocks.
    train = [json.loads(line) for line in (benchmark_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:5]]
    shots = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in train)
    first = items[0].data["question"]
    assert f"{shots}Question: {first}\nAnswer:" in prompts


# --- BBH ---------------------------------------------------------------------------------------


def test_bbh_cot_extraction_and_exact_match(benchmark_data: Path) -> None:
    subtasks = ["boolean_expressions", "date_understanding", "word_sorting"]
    targets: dict[str, str] = {}
    for name in subtasks:
        for example in json.loads((benchmark_data / "bbh" / "bbh" / f"{name}.json").read_text())["examples"]:
            targets[example["input"]] = example["target"]
    inputs = list(targets)

    def answer(text: str) -> str:
        fmt, target = inputs.index(text) % 4, targets[text]
        return [
            f"Let us work it out. So the answer is {target}.",  # right
            f"So the answer is {target}",  # the regex drops the last character: wrong
            f"I believe it is {target}.",  # no "the answer is": [invalid], wrong
            "So the answer is (Z).",  # wrong
        ][fmt]

    def script(path: str, body: dict) -> str:
        return answer(last_between(body["prompt"], "\n\nQ: ", "\nA: Let's think step by step.\n"))

    task = BenchmarkTask(benchmark_spec("BBH", subtasks, limit=24), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url)
        prompts = [body["prompt"] for _, body in server.requests]

    expected = [1.0 if inputs.index(it.data["input"]) % 4 == 0 else 0.0 for it in items]
    assert [r["scores"]["exact_match"] for r in records] == expected
    assert agg.metrics == {"exact_match": sum(expected) / len(expected)}
    assert set(agg.subtasks) == set(subtasks)
    assert agg.details["subtask_sizes"] == {"boolean_expressions": 8, "date_understanding": 8, "word_sorting": 8}
    # Description line, then the three exemplars of the cot-prompts file, lm-eval's layout.
    boolean = next(p for p in prompts if p.startswith("Evaluate the result of a random Boolean expression.\n\n"))
    assert boolean.count("\nA: Let's think step by step.\n") == 4
    assert "Q: not ( ( not not True ) ) is\nA: Let's think step by step.\nRemember that (i)" in boolean


# --- MATH --------------------------------------------------------------------------------------


def boxed(solution: str) -> str:
    start = solution.rindex("\\boxed{") + len("\\boxed{")
    depth = 1
    for i in range(start, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[i], 0)
        if depth == 0:
            return solution[start:i]
    raise AssertionError("unbalanced")


def test_math_final_answer_and_symbolic_equivalence(benchmark_data: Path) -> None:
    rows = [json.loads(line) for line in (benchmark_data / "math" / "test.jsonl").read_text().splitlines()]
    by_problem = {r["problem"]: r for r in rows}

    def answer(problem: str) -> str:
        row = by_problem[problem]
        gold = boxed(row["solution"])
        fmt = row["idx"] % 4
        if fmt == 0:
            return f"We compute.\nFinal Answer: The final answer is ${gold}$. I hope it is correct."
        if fmt == 1:
            return f"Therefore the result is $\\boxed{{{gold}}}$."  # no Minerva sentence: last \boxed{}
        if fmt == 2:
            return "Final Answer: The final answer is $123456789$. I hope it is correct."
        if gold.isdigit():  # an equal value written differently: symbolic equivalence
            return f"Final Answer: The final answer is $\\frac{{{2 * int(gold)}}}{{2}}$. I hope it is correct."
        return "Final Answer: The final answer is $\\text{no idea}$. I hope it is correct."

    def script(path: str, body: dict) -> str:
        return answer(last_between(body["prompt"], "\n\nProblem:\n", "\n\nSolution:"))

    task = BenchmarkTask(benchmark_spec("MATH", ["algebra", "prealgebra"], limit=24), "candidate")
    with serve(script) as server:
        items, records, agg = run(task, server.base_url)
        prompts = [body["prompt"] for _, body in server.requests]
        stops = {tuple(body["stop"]) for _, body in server.requests}

    def expected(problem: str) -> float:
        row = by_problem[problem]
        fmt = row["idx"] % 4
        return 1.0 if fmt in (0, 1) or (fmt == 3 and boxed(row["solution"]).isdigit()) else 0.0

    scores = [expected(it.data["problem"]) for it in items]
    assert [r["scores"]["exact_match"] for r in records] == scores
    assert agg.metrics == {"exact_match": sum(scores) / len(scores)}
    assert any(by_problem[it.data["problem"]]["idx"] % 4 == 3 and s == 1.0 for it, s in zip(items, scores, strict=True))
    assert stops == {("Problem:",)}
    assert all(
        p.startswith("Problem:\nFind the domain of the expression") and p.count("Problem:\n") == 5 for p in prompts
    )
