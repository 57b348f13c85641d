"""The headline of an evaluation: a terminal table and an HTML fragment for notebooks.

Both render the same rows (:func:`headline_rows`), read from ``results.json`` and, when the base
model ran, ``comparison.json``: each metric's value with its stderr and 95% confidence interval,
and with a comparison the base value, the difference and the paired test's p-value. A metric that
is null (no answer could be parsed) stays in the table with its parse-failure count and a warning.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HeadlineRow:
    metric: str
    value: float | None
    stderr: float | None = None
    ci95: tuple[float, float] | None = None
    base: float | None = None
    difference: float | None = None
    p_value: float | None = None
    significant: bool | None = None
    regressed: bool | None = None
    parse_failures: int | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _per_metric(results: Mapping[str, Any]) -> Mapping[str, Any]:
    per_metric = (results.get("details") or {}).get("per_metric")
    return per_metric if isinstance(per_metric, Mapping) else {}


def parse_failures(results: Mapping[str, Any], metric: str) -> int | None:
    """Parse failures behind ``metric``: the judge's per-metric count, else the run's total for a null metric."""
    entry = _per_metric(results).get(metric)
    if isinstance(entry, Mapping) and isinstance(entry.get("parse_failures"), int):
        return entry["parse_failures"]
    total = (results.get("details") or {}).get("parse_failures")
    if results.get("metrics", {}).get(metric) is None and isinstance(total, int):
        return total
    return None


def resolve_comparison(results: Mapping[str, Any], comparison: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``comparison`` as given, else the one ``execution.results()`` nests under "comparison"."""
    if comparison is not None:
        return comparison
    nested = results.get("comparison")
    return nested if isinstance(nested, Mapping) else None


def per_metric_improvements(comparison: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Fine-tuned minus base per metric: ``improvements``, or ``improvement`` where it is still per metric."""
    for key in ("improvements", "improvement"):
        found = (comparison or {}).get(key)
        if isinstance(found, Mapping):
            return found
    return {}


def headline_rows(results: Mapping[str, Any], comparison: Mapping[str, Any] | None = None) -> list[HeadlineRow]:
    comparison = resolve_comparison(results, comparison)
    metrics = results.get("metrics") or {}
    stderr = results.get("stderr") or {}
    intervals = results.get("confidence_intervals") or {}
    base = (comparison or {}).get("base") or {}
    improvement = per_metric_improvements(comparison)
    significance = (comparison or {}).get("significance") or {}
    rows = []
    for name in sorted(metrics):
        value = metrics[name]
        if value is not None and _number(value) is None:
            continue  # not a metric value (e.g. a nested description); results.json keeps it
        ci = intervals.get(name)
        test = significance.get(name) or {}
        rows.append(
            HeadlineRow(
                metric=name,
                value=_number(value),
                stderr=_number(stderr.get(name)),
                ci95=(float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 else None,
                base=_number(base.get(name)),
                difference=_number(improvement.get(name)),
                p_value=_number(test.get("p_value")),
                significant=test.get("significant"),
                regressed=test.get("regressed"),
                parse_failures=parse_failures(results, name),
            )
        )
    return rows


def warnings(results: Mapping[str, Any], rows: list[HeadlineRow]) -> list[str]:
    out = [
        f"metric {row.metric} is null: no answer could be parsed"
        + (f" ({row.parse_failures} parse failures)" if row.parse_failures is not None else "")
        for row in rows
        if row.value is None
    ]
    out += [str(w) for w in results.get("warnings") or []]
    return out


def fmt(value: float | None, signed: bool = False, missing: str = "null") -> str:
    if value is None:
        return missing
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def fmt_ci(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"


def fmt_p(p_value: float | None) -> str:
    if p_value is None:
        return "-"
    return "<0.0001" if p_value < 1e-4 else f"{p_value:.4f}"


def significance_mark(row: HeadlineRow) -> str:
    if row.significant is None:
        return ""
    if row.regressed:
        return "regressed"
    return "significant" if row.significant else "n.s."


def _cells(row: HeadlineRow, compared: bool) -> list[str]:
    cells = [row.metric, fmt(row.value), fmt(row.stderr, missing="-"), fmt_ci(row.ci95)]
    if compared:
        cells += [
            fmt(row.base, missing="-"),
            fmt(row.difference, signed=True, missing="-"),
            fmt_p(row.p_value),
            significance_mark(row),
        ]
    cells.append("" if row.parse_failures is None else str(row.parse_failures))
    return cells


def _headers(compared: bool) -> list[str]:
    head = ["metric", "value", "stderr", "95% CI"]
    if compared:
        head += ["base", "difference", "p-value", "significance"]
    return [*head, "parse failures"]


def _title(results: Mapping[str, Any]) -> str:
    return (
        f"{results.get('name', 'evaluation')} ({results.get('eval_type', '?')}): "
        f"model {results.get('model', '?')}, {results.get('num_samples', '?')} samples"
    )


def summary_text(results: dict, comparison: dict | None = None) -> str:
    """A plain-text table for a terminal, with a warning line per null metric."""
    rows = headline_rows(results, comparison)
    compared = resolve_comparison(results, comparison) is not None
    table = [_headers(compared)] + [_cells(row, compared) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [_title(results)]
    for line in table:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines += [f"warning: {w}" for w in warnings(results, rows)]
    return "\n".join(lines) + "\n"


def summary_html(results: dict, comparison: dict | None = None) -> str:
    """The same table as an HTML fragment (escaped; no script, no external resource) for notebooks."""
    rows = headline_rows(results, comparison)
    compared = resolve_comparison(results, comparison) is not None
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _headers(compared))
    body = []
    for row in rows:
        cells = "".join(
            f'<td data-metric="{esc(row.metric)}">{esc(c)}</td>' if i == 0 else f"<td>{esc(c)}</td>"
            for i, c in enumerate(_cells(row, compared))
        )
        body.append(f"<tr>{cells}</tr>")
    notes = "".join(f'<p class="evalstack-warning">warning: {esc(w)}</p>' for w in warnings(results, rows))
    return (
        f'<div class="evalstack-summary"><p><strong>{esc(_title(results))}</strong></p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}</div>"
    )
