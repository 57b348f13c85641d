"""The reference's headline figures: ``accuracy`` and ``score`` beside the detailed metrics, and a
comparison whose ``improvement`` is one number, the primary metric's difference."""

from __future__ import annotations

from typing import Any

from evalstack.catalog.metrics import PrimaryMetric


def headline(metrics: dict[str, Any], primary: PrimaryMetric | None) -> dict[str, Any]:
    """``metrics`` plus the reference's ``accuracy`` (when the primary metric is an accuracy) and
    ``score`` (the primary metric on 0-100). A metric of those names already there is kept."""
    value = metrics.get(primary.name) if primary is not None else None
    if primary is None or isinstance(value, bool) or not isinstance(value, int | float):
        return dict(metrics)
    out = dict(metrics)
    if primary.is_accuracy:
        out.setdefault("accuracy", value)
    # Rounded so 0.54 reads 54.0 rather than 54.00000000000001, as the reference shows it.
    out.setdefault("score", round(value / primary.scale * 100, 10))
    return out


def with_headline(comparison: dict[str, Any], primary: PrimaryMetric | None) -> dict[str, Any]:
    """A comparison in the reference's shape: ``improvement`` becomes the primary metric's difference
    (None without one) and the per-metric differences move to ``improvements``."""
    fine_tuned = headline(comparison["fine_tuned"], primary)
    base = headline(comparison["base"], primary)
    improvements = {
        m: fine_tuned[m] - base[m]
        for m in fine_tuned
        if m in base and all(isinstance(v, int | float) for v in (fine_tuned[m], base[m]))
    }
    name = primary.name if primary is not None else None
    return {
        **comparison,
        "fine_tuned": fine_tuned,
        "base": base,
        "primary_metric": name,
        "improvement": improvements.get(name) if name else None,
        "improvements": improvements,
    }
