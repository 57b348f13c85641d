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

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from evalstack.task import Aggregate

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_BLOCK = 4_000_000  # resample indices drawn at once (32 MB)


def mcnemar_exact(candidate: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    cand, other = np.asarray(candidate, dtype=float), np.asarray(base, dtype=float)
    if cand.shape != other.shape:
        raise ValueError(f"{len(cand)} candidate scores but {len(other)} base scores")
    candidate_only = int(np.count_nonzero((cand == 1.0) & (other == 0.0)))
    base_only = int(np.count_nonzero((cand == 0.0) & (other == 1.0)))
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
    n = len(diffs)
    observed = float(diffs.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    centred = np.empty(resamples)
    # Resamples are drawn in blocks of rows so memory stays ~BOOTSTRAP_BLOCK indices whatever n is;
    # the generator yields the same stream as one (resamples, n) draw, so the numbers do not change.
    rows = max(1, BOOTSTRAP_BLOCK // n)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diffs[indices].mean(axis=1)
        centred[start:stop] = (diffs - observed)[indices].mean(axis=1)
    p_value = float(np.mean(np.abs(centred) >= abs(observed) - 1e-12))
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "test": "paired_bootstrap",
        "n_pairs": n,
        "mean_difference": observed,
        "ci95": [float(low), float(high)],
        "resamples": resamples,
        "p_value": p_value,
        "significant": bool(p_value < ALPHA),
        "regressed": bool(p_value < ALPHA and observed < 0),
    }


def _is_binary(values: Sequence[float]) -> bool:
    scores = np.asarray(values, dtype=float)
    return bool(np.all((scores == 0.0) | (scores == 1.0)))


def paired_test(candidate: Sequence[float], base: Sequence[float], seed: int) -> dict[str, Any]:
    if _is_binary(candidate) and _is_binary(base):
        return mcnemar_exact(candidate, base)
    return paired_bootstrap(candidate, base, seed)


Pair = tuple[str | None, dict[str, float], dict[str, float]]


def _pairs(candidate_records: Sequence[dict[str, Any]], base_records: Sequence[dict[str, Any]]) -> list[Pair]:
    base_by_id = {r["id"]: r for r in base_records}
    return [
        (r.get("subtask"), r["scores"], base_by_id[r["id"]]["scores"])
        for r in candidate_records
        if r["id"] in base_by_id
    ]


def joined_pairs(candidate_lines: Iterable[str], base_lines: Iterable[str]) -> Iterator[Pair]:
    """Pairs from two samples.jsonl streams of the same items in the same order (a streamed join)."""
    for number, (cand_line, base_line) in enumerate(zip(candidate_lines, base_lines, strict=True), start=1):
        cand, base = json.loads(cand_line), json.loads(base_line)
        if cand["id"] != base["id"]:
            raise ValueError(
                f"compare: line {number} is sample {cand['id']!r} for the candidate, {base['id']!r} for the base"
            )
        yield cand.get("subtask"), cand["scores"], base["scores"]


class _PairedScores:
    """Per metric, the paired values of one group (all samples, or one subtask) as compact arrays."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[array, array]] = {}

    def add(self, cand: dict[str, float], base: dict[str, float]) -> None:
        for metric, value in cand.items():
            if metric in base:
                pair = self.values.setdefault(metric, (array("d"), array("d")))
                pair[0].append(float(value))
                pair[1].append(float(base[metric]))

    def tests(self, seed: int) -> dict[str, Any]:
        return {m: paired_test(c, b, seed) for m, (c, b) in sorted(self.values.items())}


def compare(
    candidate_records: Sequence[dict[str, Any]],
    base_records: Sequence[dict[str, Any]],
    candidate_agg: Aggregate,
    base_agg: Aggregate,
    seed: int,
) -> dict[str, Any]:
    return compare_pairs(_pairs(candidate_records, base_records), candidate_agg, base_agg, seed)


def compare_pairs(pairs: Iterable[Pair], candidate_agg: Aggregate, base_agg: Aggregate, seed: int) -> dict[str, Any]:
    """The comparison from paired per-sample scores, read once: only the scores are kept, per metric."""
    overall = _PairedScores()
    by_subtask: dict[str, _PairedScores] = {}
    paired = 0
    for subtask, cand, base in pairs:
        paired += 1
        overall.add(cand, base)
        if subtask:
            by_subtask.setdefault(subtask, _PairedScores()).add(cand, base)
    if not paired:
        raise ValueError("compare: the candidate and base records share no sample id")
    subtasks = {name: by_subtask[name].tests(seed) for name in sorted(by_subtask)}
    # A null metric (no judge answer parsed) has no difference.
    common = [
        m for m in candidate_agg.metrics if candidate_agg.metrics[m] is not None and base_agg.metrics.get(m) is not None
    ]
    improvement = {m: candidate_agg.metrics[m] - base_agg.metrics[m] for m in common}
    tests = overall.tests(seed)
    return {
        "fine_tuned": dict(candidate_agg.metrics),
        "base": dict(base_agg.metrics),
        "improvement": improvement,
        "significance": tests,
        "significance_by_subtask": subtasks,
        # The direction comes from the paired test itself: for corpus metrics (BLEU) the aggregate
        # difference and the per-sample test can point different ways.
        "significant_regression": any(test["regressed"] for test in tests.values()),
    }
