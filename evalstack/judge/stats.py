"""Aggregate statistics of normalised judge scores.

The 95% confidence interval is Student's t interval on the mean, ``mean +- t(0.975, n-1) * s / sqrt(n)``
with ``s`` the sample standard deviation (ddof=1). It is not clipped to [0, 1]: a wide interval on
few samples is information, not an error.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreSummary:
    n: int
    mean: float | None
    std: float | None
    stderr: float | None
    ci95: tuple[float, float] | None


def summarise(values: Sequence[float]) -> ScoreSummary:
    """Mean, sample std, standard error and 95% t interval; None where ``values`` cannot define them."""
    n = len(values)
    if n == 0:
        return ScoreSummary(0, None, None, None, None)
    mean = statistics.fmean(values)
    if n == 1:
        return ScoreSummary(1, mean, None, None, None)
    std = statistics.stdev(values)
    stderr = std / math.sqrt(n)
    # Imported here: the client imports this module to validate judge settings without the engine extra.
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.975, n - 1)) * stderr
    return ScoreSummary(n, mean, std, stderr, (mean - half, mean + half))
