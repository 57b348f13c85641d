"""The viewer's pages: plain HTML with inline CSS and SVG, forms that only GET, no script."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from evalstack.masking import mask
from evalstack.results import plots
from evalstack.results.html_report import CSS, esc, num, table
from evalstack.results.summary import fmt
from evalstack.spec import EVAL_TYPES
from evalstack.view.executions import MAX_COMPARED, MIN_COMPARED, ExecutionView, Filters

STATUSES = ("Executing", "Succeeded", "Failed", "Stopping", "Stopped")
VIEW_CSS = CSS + "form.filters label{margin-right:.8rem}.error{color:#c0392b}"


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<style>{VIEW_CSS}</style></head><body><nav><a href="/">Executions</a></nav>'
        f"<h1>{esc(title)}</h1>{body}</body></html>\n"
    )


def _report_link(view: ExecutionView) -> str:
    return f"/executions/{quote(view.id, safe='')}/report"


def _options(name: str, values: Iterable[str], chosen: str) -> str:
    options = [f'<option value=""{"" if chosen else " selected"}>any</option>']
    options += [f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>' for v in values]
    return f'<select name="{name}" id="filter-{name}">{"".join(options)}</select>'


def list_page(views: Sequence[ExecutionView], filters: Filters) -> str:
    form = (
        '<form class="filters" method="get" action="/">'
        f"<label>type {_options('type', EVAL_TYPES, filters.eval_type)}</label>"
        f"<label>status {_options('status', STATUSES, filters.status)}</label>"
        f'<label>model <input name="model" id="filter-model" value="{esc(filters.model)}"></label>'
        '<button type="submit" id="apply-filters">filter</button></form>'
    )
    rows = []
    for v in views:
        name, value = v.primary
        group = v.package_group
        history = f' <a href="/history?{urlencode({"group": group})}">history</a>' if group else ""
        report = f'<a href="{_report_link(v)}">report</a>' if v.files.results else ""
        rows.append(
            f'<tr data-execution="{esc(v.id)}"><td><input type="checkbox" name="id" value="{esc(v.id)}" '
            f'form="compare"></td><td>{esc(v.execution.name)}</td><td>{esc(v.execution.eval_type)}</td>'
            f"<td>{esc(str(v.execution.status))}</td><td>{esc(v.created)}</td><td><code>{esc(v.model)}</code></td>"
            f"<td>{esc(v.benchmark or '')}</td><td>{esc(name or '')}</td>{num(value)}<td>{report}{history}</td></tr>"
        )
    headers = ["", "name", "type", "status", "created", "model", "benchmark", "primary metric", "value", ""]
    compare = (
        '<form id="compare" method="get" action="/compare">'
        f'<button type="submit" id="compare-button">compare selected ({MIN_COMPARED}-{MAX_COMPARED})</button></form>'
    )
    listing = table(headers, rows, "executions") if rows else '<p class="muted">no executions match.</p>'
    return page("Executions", f"{form}<p>{len(views)} executions</p>{listing}{compare}")


def _metric_names(views: Sequence[ExecutionView]) -> list[str]:
    names: set[str] = set()
    for v in views:
        names |= {k for k, x in ((v.files.results or {}).get("metrics") or {}).items() if x is None or
                  isinstance(x, int | float)}  # fmt: skip
    return sorted(names)


def _delta_cells(values: Sequence[float | None]) -> list[str]:
    """Each value, then its difference from the first (the reference) execution."""
    cells = [num(values[0])]
    for value in values[1:]:
        delta = value - values[0] if value is not None and values[0] is not None else None
        cells += [num(value), num(delta, fmt(delta, signed=True) if delta is not None else None)]
    return cells


def _compare_headers(first: str, views: Sequence[ExecutionView]) -> list[str]:
    headers = [first, views[0].execution.name]
    for v in views[1:]:
        headers += [v.execution.name, "Δ"]
    return headers


def _value(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def subtask_deltas(views: Sequence[ExecutionView], metric: str) -> list[list[plots.DifferenceBar]]:
    """Per execution after the first: its difference from the first on each subtask both have, largest first."""
    reference = (views[0].files.results or {}).get("subtasks") or {}
    out = []
    for view in views[1:]:
        theirs = (view.files.results or {}).get("subtasks") or {}
        bars = []
        for subtask in sorted(set(reference) & set(theirs)):
            first, value = _value(reference[subtask], metric), _value(theirs[subtask], metric)
            if first is not None and value is not None:
                bars.append(plots.DifferenceBar(subtask, value - first, significant=False, p_value=None))
        out.append(sorted(bars, key=lambda b: (-b.difference, b.subtask)))
    return out


def compare_page(views: Sequence[ExecutionView]) -> str:
    metrics = _metric_names(views)
    by_metric = [[_value((v.files.results or {}).get("metrics") or {}, m) for v in views] for m in metrics]
    metric_rows = [
        f'<tr data-metric="{esc(m)}"><th scope="row">{esc(m)}</th>' + "".join(_delta_cells(row)) + "</tr>"
        for m, row in zip(metrics, by_metric, strict=True)
    ]
    names = [v.execution.name for v in views]
    plot = plots.metric_bars("compare-metrics-plot", metrics, names, by_metric) if metrics else ""
    metric_plot = f'<div class="plot" id="compare-metrics-plot">{plot}</div>' if metrics else ""
    refs = "".join(
        f'<li><a href="{_report_link(v)}">{esc(v.execution.name)}</a>: <code>{esc(v.model)}</code>, '
        f"{esc(v.created)}</li>"
        for v in views
    )
    body = [f"<p>Δ is each execution minus the first.</p><ul>{refs}</ul><h2>Metrics</h2>", metric_plot,
            table(_compare_headers("metric", views), metric_rows, "compare-metrics")]  # fmt: skip
    subtasks = sorted({s for v in views for s in (v.files.results or {}).get("subtasks") or {}})
    primary, _ = views[0].primary
    if subtasks and primary:
        rows = []
        for s in subtasks:
            values = [_value(((v.files.results or {}).get("subtasks") or {}).get(s) or {}, primary) for v in views]
            rows.append(
                f'<tr data-subtask="{esc(s)}"><th scope="row">{esc(s)}</th>{"".join(_delta_cells(values))}</tr>'
            )
        body.append(f"<h2>{esc(primary)} by subtask</h2>")
        deltas = []
        for i, (view, bars) in enumerate(zip(views[1:], subtask_deltas(views, primary), strict=True), start=1):
            if not bars:
                continue
            plot_id = f"compare-delta-{i}"
            label = f"{primary}: {view.execution.name} minus {views[0].execution.name}"
            deltas.append(f'<div class="plot" id="{plot_id}"><h3>{esc(label)}, sorted</h3>'
                          f"{plots.difference_bars(plot_id, primary, bars, xlabel=label)}</div>")  # fmt: skip
        body += [f'<div class="plots">{"".join(deltas)}</div>',
                 table(_compare_headers("subtask", views), rows, "compare-subtasks")]  # fmt: skip
    return page(f"Compare {len(views)} executions", "".join(body))


def history_page(group: str, views: Sequence[ExecutionView], decisions: Sequence[str]) -> str:
    if not views:
        return page(f"History of {group}", '<p class="muted">no finished evaluation of this group.</p>')
    metric, _ = views[0].primary
    points = [
        plots.HistoryPoint(v.created, v.primary[1], f"v{v.package_version}" if v.package_version else v.execution.name)
        for v in views
    ]
    rows = [
        f'<tr data-execution="{esc(v.id)}"><td>{esc(str(v.package_version or "-"))}</td><td>{esc(v.created)}</td>'
        f'<td><a href="{_report_link(v)}">{esc(v.execution.name)}</a></td>{num(v.primary[1])}'
        f"<td>{esc(decision)}</td></tr>"
        for v, decision in zip(views, decisions, strict=True)
    ]
    plot = plots.history_line("history", metric or "primary metric", points)
    headers = ["version", "created", "execution", metric or "primary metric", "decision"]
    body = f'<div class="plot" id="history">{plot}</div>' + table(headers, rows, "history-table")
    return page(f"History of {group}", body)


def samples_page(title: str, lines: Iterable[str]) -> str:
    """samples.jsonl with one anchor per line (#L<n>), so a report's sample links land on their row."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            shown = json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False)
        except json.JSONDecodeError:
            shown = line.rstrip("\n")
        rows.append(f'<tr id="L{number}"><td><a href="#L{number}">{number}</a></td><td><code>'
                    f"{esc(mask(shown))}</code></td></tr>")  # fmt: skip
    return page(title, table(["line", "record"], rows, "samples"))


def error_page(status: int, message: str) -> str:
    return page(f"{status}", f'<p class="error">{esc(message)}</p>')
