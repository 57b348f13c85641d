"""The benchmark and llm_as_judge kinds through the public evaluators on the local pipeline backend:
real subprocess steps, real ARC and TruthfulQA data from shared/benchmarks, loopback model servers
scripted so every expected score is known exactly. (custom_scorer: tests/test_pipeline_local.py.)"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from scipy.stats import binomtest

from evalstack import storage
from evalstack.evaluate import BenchMarkEvaluator, LLMAsJudgeEvaluator
from tests.support.judge_data import truthfulqa_questions, write_dataset
from tests.support.openai_server import prompt_of, serve
from tests.test_judge_compare import _between, _judge, _mixed_rule
from tests.test_pipeline_local import OUTPUT, _output, _params, _wait

LETTERS = "ABCDE"
# ARC easy + challenge with limit 12: sizes 2376 / 1172 -> quotas 8.04 / 3.96 -> 8 + 4 items (seed 1234).
EASY = ["MEAP_2004_8_1", "ACTAAP_2014_7_2", "NYSEDREGENTS_2010_4_9", "NYSEDREGENTS_2013_8_7",
        "MSA_2015_5_34", "MCAS_2011_8_17692", "Mercury_7001348", "MCAS_2004_5_25"]  # fmt: skip
CHALLENGE = ["Mercury_7106698", "MCAS_2005_9_6", "Mercury_SC_400182", "Mercury_SC_415457"]
CANDIDATE_WRONG = {"NYSEDREGENTS_2010_4_9", "MCAS_2005_9_6"}
BASE_RIGHT = {"MEAP_2004_8_1", "ACTAAP_2014_7_2", "NYSEDREGENTS_2010_4_9", "Mercury_7106698"}


def _arc_rows(benchmark_data: Path) -> dict[str, tuple[str, int]]:
    """Question stem -> (id, index of the gold choice), over both ARC test files."""
    out = {}
    for folder in ("ARC-Easy", "ARC-Challenge"):
        for line in (benchmark_data / "arc" / folder / f"{folder}-Test.jsonl").read_text().splitlines():
            row = json.loads(line)
            labels = [c["label"] for c in row["question"]["choices"]]
            out[row["question"]["stem"]] = (row["id"], labels.index(row["answerKey"]))
    return out


def _arc_script(rows: dict[str, tuple[str, int]]):
    """Answer letters: the candidate is right except on CANDIDATE_WRONG, the base only on BASE_RIGHT."""

    def script(path: str, body: dict) -> str:
        prompt = prompt_of(path, body)
        stem = _between(prompt, "Question: ", "\nA. ")
        row_id, gold = rows[stem]
        right = row_id not in CANDIDATE_WRONG if body["model"] == "candidate" else row_id in BASE_RIGHT
        return LETTERS[gold] if right else LETTERS[(gold + 1) % 4]

    return script


def _subtask(correct: list[float]) -> dict[str, float]:
    return {"acc": sum(correct) / len(correct), "acc_stderr": statistics.stdev(correct) / math.sqrt(len(correct))}


def _read(output: str, path: str) -> str:
    return storage.read_text(storage.join(output, path))


def test_benchmark_kind_with_base_model_and_two_shards(benchmark_data: Path) -> None:
    with serve(_arc_script(_arc_rows(benchmark_data))) as server:
        evaluator = BenchMarkEvaluator(
            "ARC",
            subtasks=["easy", "challenge"],
            model=f"openai:{server.base_url}?model=candidate&api=chat&logprobs=none",
            base_model=f"openai:{server.base_url}?model=base&api=chat&logprobs=none",
            evaluate_base_model=True,
            s3_output_path=OUTPUT,
            base_eval_name="arc",
        )
        evaluator.hyperparameters.limit = 12
        one = evaluator.evaluate()
        # The same spec on two instances: the pipeline the evaluator created, started with InstanceCount=2.
        spec_uri = storage.join(OUTPUT, one.name, "spec.json")
        # (That pipeline declares no ExecutionRoleArn parameter: the evaluator bakes the role in.)
        parameters = [p for p in _params(spec_uri, base=True, instances=2) if p["Name"] != "ExecutionRoleArn"]
        two = one.backend.client.start_pipeline_execution(
            PipelineName="evalstack-benchmark", PipelineParameters=parameters
        )["PipelineExecutionArn"]
        one.wait(poll=0.5, timeout=240)
        desc = _wait(one.backend.client, two)
        assert desc["PipelineExecutionStatus"] == "Succeeded", desc.get("FailureReason")
        assert {body["model"] for _, body in server.requests} == {"candidate", "base"}

    results = one.results()
    samples = [json.loads(line) for line in _read(one.s3_output_path, "samples.jsonl").splitlines()]
    assert [s["id"] for s in samples] == [f"arc/easy/{i}" for i in EASY] + [f"arc/challenge/{i}" for i in CHALLENGE]
    assert {s["mode"] for s in samples} == {"generate"}
    candidate = {i: float(i not in CANDIDATE_WRONG) for i in EASY + CHALLENGE}
    base = {i: float(i in BASE_RIGHT) for i in EASY + CHALLENGE}
    assert results["num_samples"] == 12
    # ARC's primary acc_norm needs log-likelihoods; letter scoring gives acc, which the headline reads.
    assert results["metrics"] == {"acc": 10 / 12, "accuracy": 10 / 12, "score": round(10 / 12 * 100, 10)}
    assert results["subtasks"] == {
        "easy": _subtask([candidate[i] for i in EASY]),
        "challenge": _subtask([candidate[i] for i in CHALLENGE]),
    }
    assert results["details"]["subtask_sizes"] == {"challenge": 4, "easy": 8}
    base_results = json.loads(_read(one.s3_output_path, "base/results.json"))
    assert base_results["metrics"] == {"acc": 4 / 12, "accuracy": 4 / 12, "score": round(4 / 12 * 100, 10)}
    assert base_results["subtasks"] == {
        "easy": _subtask([base[i] for i in EASY]),
        "challenge": _subtask([base[i] for i in CHALLENGE]),
    }
    assert (base_results["subtasks"]["easy"]["acc"], base_results["subtasks"]["challenge"]["acc"]) == (3 / 8, 1 / 4)

    comparison = results["comparison"]
    assert comparison["fine_tuned"] == results["metrics"] and comparison["base"] == base_results["metrics"]
    assert comparison["primary_metric"] == "acc" and comparison["improvement"] == 10 / 12 - 4 / 12
    assert comparison["improvements"]["acc"] == comparison["improvements"]["accuracy"] == 10 / 12 - 4 / 12
    # Discordant pairs: candidate-only right 7 (5 easy, 2 challenge), base-only right 1 (easy).
    for test, (ours, theirs) in [
        (comparison["significance"]["acc"], (7, 1)),
        (comparison["significance_by_subtask"]["easy"]["acc"], (5, 1)),
        (comparison["significance_by_subtask"]["challenge"]["acc"], (2, 0)),
    ]:
        assert test["test"] == "mcnemar_exact"
        assert (test["candidate_only_correct"], test["base_only_correct"]) == (ours, theirs)
        assert test["p_value"] == binomtest(ours, ours + theirs, 0.5).pvalue
        assert test["significant"] is False
    assert comparison["significant_regression"] is False

    two_output = _output(two)
    for role in ("candidate", "base"):
        names = [u.rsplit("/", 1)[-1] for u in storage.list_uris(storage.join(two_output, "records", role))]
        shards = [n for n in names if n.endswith(".jsonl")]  # beside them: each shard's progress file
        assert shards == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    for path in ("results.json", "samples.jsonl", "base/results.json", "base/samples.jsonl", "comparison.json"):
        assert _read(one.s3_output_path, path) == _read(two_output, path), path


@pytest.fixture
def truthfulqa(tmp_path: Path) -> tuple[list[dict[str, str]], str]:
    rows = truthfulqa_questions(12)
    return rows, str(write_dataset(tmp_path / "qa.jsonl", rows))


def _judge_with_correctness(rows: list[dict[str, str]]):
    """test_judge_compare's judge (helpfulness 5/2, mixed pairwise verdicts) plus correctness:
    4 for TruthfulQA's best answer, 1 for an incorrect one."""
    best = {r["best"] for r in rows}
    helpfulness_and_pairwise = _judge(rows, _mixed_rule)

    def script(path: str, body: dict) -> str:
        prompt = prompt_of(path, body)
        if "Metric: correctness" in prompt:
            assert "[Reference answer]\n" in prompt
            return "Rating: 4" if _between(prompt, "[Response]\n", "\n\n") in best else "Rating: 1"
        return helpfulness_and_pairwise(path, body)

    return script


def test_llm_as_judge_kind_with_base_model(truthfulqa) -> None:
    rows, dataset = truthfulqa
    incorrect = {r["question"]: r["incorrect"] for r in rows}
    with serve(lambda p, b: incorrect[prompt_of(p, b)]) as base_server, serve(_judge_with_correctness(rows)) as judge:
        execution = LLMAsJudgeEvaluator(
            f"openai:{judge.base_url}?model=judge&api=chat",
            dataset,
            builtin_metrics=["helpfulness", "correctness"],
            model="my-fine-tuned-llm",  # a label: the candidate's responses are in the dataset
            base_model=f"openai:{base_server.base_url}?model=base&api=chat",
            evaluate_base_model=True,
            s3_output_path=OUTPUT,
        ).evaluate()
        execution.wait(poll=0.5, timeout=240)
        assert len(base_server.requests) == 12

    steps = {s.name: s.status for s in execution.steps()}
    assert steps == {
        "EvaluateModel": "Completed",
        "CheckEvaluateBaseModel": "Completed",
        "EvaluateBaseModel": "Completed",
        "ReportWithBase": "Completed",
    }
    results = execution.results()
    assert results["num_samples"] == 12
    assert results["metrics"] == {
        "helpfulness": 1.0,
        "helpfulness_pass_rate": 1.0,
        "correctness": 0.75,
        "correctness_pass_rate": 1.0,
        "score": 100.0,  # the first judge metric, helpfulness, on 0-100
    }
    per_metric = results["details"]["per_metric"]
    assert (per_metric["correctness"]["raw_mean"], per_metric["correctness"]["n"]) == (4.0, 12)
    assert per_metric["correctness"]["reference_missing"] == 0
    base = json.loads(_read(execution.s3_output_path, "base/results.json"))["metrics"]
    assert base == {
        "helpfulness": 0.25,
        "helpfulness_pass_rate": 0.0,
        "correctness": 0.0,
        "correctness_pass_rate": 0.0,
        "score": 25.0,
    }

    comparison = results["comparison"]
    assert comparison["improvements"] == {
        "helpfulness": 0.75,
        "helpfulness_pass_rate": 1.0,
        "correctness": 0.75,
        "correctness_pass_rate": 1.0,
        "score": 75.0,
    }
    assert comparison["higher_is_better"] == {"helpfulness": True, "correctness": True}
    # _mixed_rule: 6 judged on content, 3 position-biased (ties), 1 prefers the base, 1 tie, 1 unreadable.
    pairwise = comparison["pairwise"]
    assert (pairwise["wins"], pairwise["ties"], pairwise["losses"], pairwise["parse_failures"]) == (6, 4, 1, 1)
    assert (pairwise["n"], pairwise["retries"]) == (11, 2)
    assert pairwise["win_rate"] == 6 / 11 and pairwise["consistency_rate"] == 8 / 11
    assert [s["outcome"] for s in pairwise["samples"]] == ["win"] * 6 + ["tie"] * 3 + ["loss", "tie", "parse_failure"]
