"""Base versus fine-tuned: ``comparison.json`` with paired significance tests.

Shape (the reference's ``fine_tuned``/``base``/``improvement``, plus per-metric improvements and a
significance section)::

    {"fine_tuned": {metric: value, "accuracy": a, "score": s}, "base": {...},
     "primary_metric": name, "improvement": fine_tuned - base on the primary metric (a number),
     "improvements": {metric: fine_tuned - base},
     "significance": {metric: test}, "significance_by_subtask": {subtask: {metric: test}},
     "significant_regression": bool}

:func:`compare` returns the per-metric part; :func:`evalstack.results.headline.with_headline` adds
the reference's headline (``accuracy`` where the primary metric is one, ``score`` on 0-100, the
number ``improvement``).

``significance`` is over all paired samples; a test is ``significant`` at p < 0.05 and ``regressed``
when, in addition, the paired samples favour the base; ``significant_regression`` is true when any
metric regressed.

Samples are paired by record ``id``. A metric whose paired scores are all 0 or 1 gets McNemar's
exact test: a two-sided binomial test (``scipy.stats.binomtest``, p = 0.5) on the discordant pairs.
Any other per-sample score gets a paired bootstrap: resample the pairs' differences with numpy's
``default_rng(seed)``; the interval is the 2.5/97.5 percentiles of the resampled mean difference,
and the p-value is the share of resampled means of the centred differences at least as far from 0
as the observed mean difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from evalstack.task import Aggregate

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000


def mcnemar_exact(candidate: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    candidate_only = sum(1 for c, b in zip(candidate, base, strict=True) if c == 1.0 and b == 0.0)
    base_only = sum(1 for c, b in zip(candidate, base, strict=True) if c == 0.0 and b == 1.0)
    discordant = candidate_only + base_only
    p_value = binomtest(candidate_only, discordant, 0.5).pvalue if discordant else 1.0
    return {
        "test": "mcnemar_exact",
        "n_pairs": len(candidate),
        "candidate_only_correct": candidate_only,
        "base_only_correct": base_only,
        "p_value": float(p_value),
        "significant": bool(p_value < ALPHA),
        "regressed": bool(p_value < ALPHA and base_only > candidate_only),
    }


def paired_bootstrap(
    candidate: Sequence[float], base: Sequence[float], seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict[str, Any]:
    diffs = np.asarray(candidate, dtype=float) - np.asarray(base, dtype=float)
    observed = float(diffs.mean())
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[indices].mean(axis=1)
    centred = (diffs - observed)[indices].mean(axis=1)
    p_value = float(np.mean(np.abs(centred) >= abs(observed) - 1e-12))
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "test": "paired_bootstrap",
        "n_pairs": len(diffs),
        "mean_difference": observed,
        "ci95": [float(low), float(high)],
        "resamples": resamples,
        "p_value": p_value,
        "significant": bool(p_value < ALPHA),
        "regressed": bool(p_value < ALPHA and observed < 0),
    }


def _is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def paired_test(candidate: Sequence[float], base: Sequence[float], seed: int) -> dict[str, Any]:
    if _is_binary(candidate) and _is_binary(base):
        return mcnemar_exact(candidate, base)
    return paired_bootstrap(candidate, base, seed)


def _pairs(
    candidate_records: Sequence[dict[str, Any]], base_records: Sequence[dict[str, Any]]
) -> list[tuple[str | None, dict[str, float], dict[str, float]]]:
    base_by_id = {r["id"]: r for r in base_records}
    return [
        (r.get("subtask"), r["scores"], base_by_id[r["id"]]["scores"])
        for r in candidate_records
        if r["id"] in base_by_id
    ]


def _tests(pairs: list[tuple[str | None, dict[str, float], dict[str, float]]], seed: int) -> dict[str, Any]:
    metrics = sorted({m for _, cand, base in pairs for m in cand if m in base})
    out = {}
    for metric in metrics:
        both = [(float(c[metric]), float(b[metric])) for _, c, b in pairs if metric in c and metric in b]
        out[metric] = paired_test([c for c, _ in both], [b for _, b in both], seed)
    return out


def compare(
    candidate_records: Sequence[dict[str, Any]],
    base_records: Sequence[dict[str, Any]],
    candidate_agg: Aggregate,
    base_agg: Aggregate,
    seed: int,
) -> dict[str, Any]:
    pairs = _pairs(candidate_records, base_records)
    if not pairs:
        raise ValueError("compare: the candidate and base records share no sample id")
    subtasks: dict[str, Any] = {}
    for subtask in sorted({s for s, _, _ in pairs if s}):
        subtasks[subtask] = _tests([p for p in pairs if p[0] == subtask], seed)
    # A null metric (no judge answer parsed) has no difference.
    common = [
        m
        for m in candidate_agg.metrics
        if candidate_agg.metrics[m] is not None and base_agg.metrics.get(m) is not None
    ]
    improvement = {m: candidate_agg.metrics[m] - base_agg.metrics[m] for m in common}
    overall = _tests(pairs, seed)
    return {
        "fine_tuned": dict(candidate_agg.metrics),
        "base": dict(base_agg.metrics),
        "improvement": improvement,
        "significance": overall,
        "significance_by_subtask": subtasks,
        # The direction comes from the paired test itself: for corpus metrics (BLEU) the aggregate
        # difference and the per-sample test can point different ways.
        "significant_regression": any(test["regressed"] for test in overall.values()),
    }

