"""compare(): McNemar's exact test and the paired bootstrap on scripted pairs, checked against scipy
and numpy computed here directly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from evalstack.results.compare import compare, paired_bootstrap
from evalstack.task import Aggregate


def records(scores: list[dict[str, float]], subtasks: list[str | None]) -> list[dict]:
    return [
        {"id": f"s{i}", "subtask": sub, "scores": s} for i, (s, sub) in enumerate(zip(scores, subtasks, strict=True))
    ]


def test_mcnemar_per_subtask_and_overall_against_scipy() -> None:
    # x: candidate right & base wrong 7 times, the reverse 2 times, 11 ties; y: 3 vs 3.
    cand = [1.0] * 7 + [0.0] * 2 + [1.0] * 6 + [0.0] * 5 + [1.0] * 3 + [0.0] * 3 + [1.0] * 4
    base = [0.0] * 7 + [1.0] * 2 + [1.0] * 6 + [0.0] * 5 + [0.0] * 3 + [1.0] * 3 + [1.0] * 4
    subs = ["x"] * 20 + ["y"] * 10
    cand_records = records([{"acc": v} for v in cand], subs)
    base_records = records([{"acc": v} for v in base], subs)
    # The base ran its items in another order: pairs are matched by id, not position.
    base_records.reverse()
    out = compare(
        cand_records, base_records, Aggregate({"acc": sum(cand) / 30}), Aggregate({"acc": sum(base) / 30}), seed=1
    )
    overall = out["significance"]["acc"]
    assert (overall["candidate_only_correct"], overall["base_only_correct"]) == (10, 5)
    assert overall["p_value"] == binomtest(10, 15, 0.5).pvalue
    x = out["significance_by_subtask"]["x"]["acc"]
    assert (x["candidate_only_correct"], x["base_only_correct"], x["n_pairs"]) == (7, 2, 20)
    assert x["p_value"] == binomtest(7, 9, 0.5).pvalue
    assert out["significance_by_subtask"]["y"]["acc"]["p_value"] == binomtest(3, 6, 0.5).pvalue
    assert out["improvement"] == {"acc": sum(cand) / 30 - sum(base) / 30}
    assert out["significant_regression"] is False
    assert set(out) == {"fine_tuned", "base", "improvement", "significance", "significance_by_subtask",
                        "significant_regression"}  # fmt: skip


def test_no_discordant_pairs_gives_p_one() -> None:
    same = records([{"acc": 1.0}, {"acc": 0.0}], [None, None])
    out = compare(same, same, Aggregate({"acc": 0.5}), Aggregate({"acc": 0.5}), seed=0)
    assert out["significance"]["acc"]["p_value"] == 1.0
    assert out["significance_by_subtask"] == {}


def test_paired_bootstrap_for_continuous_scores() -> None:
    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.6, size=40)
    cand = base - 0.1 + rng.normal(0, 0.02, size=40)  # clearly worse
    cand_records = records([{"rouge": float(v)} for v in cand], [None] * 40)
    base_records = records([{"rouge": float(v)} for v in base], [None] * 40)
    out = compare(
        cand_records,
        base_records,
        Aggregate({"rouge": float(cand.mean())}),
        Aggregate({"rouge": float(base.mean())}),
        9,
    )
    test = out["significance"]["rouge"]
    diffs = cand - base
    draws = np.random.default_rng(9).integers(0, 40, size=(10_000, 40))
    assert test["test"] == "paired_bootstrap"
    assert test["mean_difference"] == pytest.approx(float(diffs.mean()), rel=1e-12)
    assert test["ci95"] == pytest.approx(list(np.percentile(diffs[draws].mean(axis=1), [2.5, 97.5])), rel=1e-12)
    assert test["p_value"] == 0.0
    assert out["significant_regression"] is True
    assert paired_bootstrap(list(cand), list(base), 9) == test  # seeded: the same every time


def test_no_shared_ids_is_an_error() -> None:
    a = records([{"acc": 1.0}], [None])
    b = [{"id": "other", "subtask": None, "scores": {"acc": 0.0}}]
    with pytest.raises(ValueError, match="share no sample id"):
        compare(a, b, Aggregate({"acc": 1.0}), Aggregate({"acc": 0.0}), seed=0)


def test_regression_direction_comes_from_the_paired_test() -> None:
    # Sentence-level BLEU clearly better for the candidate, while the corpus aggregate (a different
    # statistic) says worse: the samples, not the aggregate, decide whether it regressed.
    cand = [80.0 + i % 5 for i in range(40)]
    base = [10.0 + i % 7 for i in range(40)]
    out = compare(
        records([{"bleu": v} for v in cand], [None] * 40),
        records([{"bleu": v} for v in base], [None] * 40),
        Aggregate({"bleu": 24.7}),
        Aggregate({"bleu": 81.2}),
        seed=3,
    )
    test = out["significance"]["bleu"]
    assert test["significant"] and test["mean_difference"] > 0 and not test["regressed"]
    assert out["improvement"]["bleu"] < 0
    assert out["significant_regression"] is False
    flipped = compare(
        records([{"bleu": v} for v in base], [None] * 40),
        records([{"bleu": v} for v in cand], [None] * 40),
        Aggregate({"bleu": 81.2}),
        Aggregate({"bleu": 24.7}),
        seed=3,
    )
    assert flipped["significance"]["bleu"]["regressed"] and flipped["significant_regression"] is True
