"""Means and standard errors as lm-evaluation-harness computes them.

- A metric over one task: the mean, and the sample standard deviation (n - 1) over sqrt(n).
- A group that weights subtasks by size (``weight_by_size: true``): the size-weighted mean, i.e.
  the micro average over samples, and lm-eval's ``pooled_sample_stderr``:
  sqrt( sum_i (n_i - 1) * se_i^2 * n_i / (N - k) / N ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """None when undefined (fewer than two samples)."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    variance = math.fsum((x - mu) ** 2 for x in values) / (n - 1)
    return math.sqrt(variance) / math.sqrt(n)


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float | None:
    """lm-eval's pooled_sample_stderr; None when it is undefined (N <= k)."""
    total = sum(sizes)
    if total - len(sizes) <= 0:
        return None
    pooled_var = math.fsum((n - 1) * se**2 * n for se, n in zip(stderrs, sizes, strict=True)) / (total - len(sizes))
    return math.sqrt(pooled_var / total)
