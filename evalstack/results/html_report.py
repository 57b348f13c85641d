"""``report.html``: one self-contained page per evaluation (inline CSS and SVG; no script, no network).

Sections, each read from the files the Report step wrote:

- headline metrics with stderr and 95% CI (results.json), base, difference and the paired test
  (comparison.json), null metrics with their parse failures;
- per subtask: bars sorted by the fine-tuned value with 95% error bars, base bars beside them, and
  the per-subtask difference with significant ones marked (significance_by_subtask);
- per-sample score histograms of every non-binary metric (judge scores), with parse failures;
- the lowest-scoring, slowest (by model seconds, from sample_timings.jsonl) and regressed samples,
  each linked to its line of samples.jsonl;
- provenance: model references (masked), dataset sha256, library versions, scoring mode,
  hyperparameters, and the execution's steps with their times.

Every number in a table carries its exact value in ``data-value``; the text is that value rounded.
The samples' digest (a fixed number of rows and per-metric value counts) is the Report step's, made as it
wrote samples.jsonl, or is read from samples.jsonl as a stream (evalstack.results.sample_digest).
"""

from __future__ import annotations

import html
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evalstack import storage
from evalstack.masking import mask
from evalstack.results import plots
from evalstack.results.sample_digest import (
    LISTED,
    ListedSample,
    SampleDigest,
    digest_samples,
    primary_metric,
    text_of,
)
from evalstack.results.sample_timings import TimingDigest, read_timings
from evalstack.results.summary import (
    fmt,
    fmt_ci,
    fmt_p,
    headline_rows,
    parse_failures,
    significance_mark,
    warnings,
)
from evalstack.results.timings import StepTime, now, recorded_step_times

MAX_DISTINCT_BINS = 11  # at most this many distinct per-sample values: one bar per value
HISTOGRAM_BINS = 20
esc = html.escape


@dataclass
class ReportInputs:
    results: dict[str, Any]
    digest: SampleDigest
    comparison: dict[str, Any] | None = None
    base_results: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    steps: list[StepTime] = field(default_factory=list)
    samples_href: str = "samples.jsonl"


# -- HTML pieces ------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#222;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}th,td{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}.warning{color:#8a4b00;background:#fff4e0;padding:.3rem .6rem;border-left:3px solid #e69500}
.significant{color:#2e8b57;font-weight:600}.regressed{color:#c0392b;font-weight:600}.muted{color:#777}
.plot svg{max-width:100%;height:auto}.plots{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
.plots .plot{flex:1 1 480px;min-width:0}
details{margin:.5rem 0}code{font-size:.85em;word-break:break-all}nav a{margin-right:.8rem}
"""


def num(value: float | None, text: str | None = None) -> str:
    """A numeric cell: exact value in data-value, rounded text."""
    if value is None:
        return f'<td class="num">{esc(text or "-")}</td>'
    return f'<td class="num" data-value="{value!r}">{esc(text or fmt(value))}</td>'


def table(headers: Sequence[str], rows: Iterable[str], table_id: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "x"


def _mark_class(mark: str) -> str:
    return {"significant": "significant", "regressed": "regressed"}.get(mark, "muted")


def headline_section(inputs: ReportInputs) -> str:
    rows = headline_rows(inputs.results, inputs.comparison)
    compared = inputs.comparison is not None
    headers = ["metric", "value", "stderr", "95% CI"]
    if compared:
        headers += ["base", "difference", "p-value", "significance"]
    headers.append("parse failures")
    body = []
    for row in rows:
        cells = [f'<th scope="row">{esc(row.metric)}</th>', num(row.value, "null" if row.value is None else None),
                 num(row.stderr)]  # fmt: skip
        cells.append(
            f'<td data-low="{row.ci95[0]!r}" data-high="{row.ci95[1]!r}">{fmt_ci(row.ci95)}</td>'
            if row.ci95
            else "<td>-</td>"
        )
        if compared:
            mark = significance_mark(row)
            cells += [num(row.base), num(row.difference, fmt(row.difference, signed=True) if row.difference is not None
                      else None), num(row.p_value, fmt_p(row.p_value)),
                      f'<td class="{_mark_class(mark)}">{esc(mark)}</td>']  # fmt: skip
        cells.append(num(float(row.parse_failures), str(row.parse_failures)) if row.parse_failures is not None
                     else "<td></td>")  # fmt: skip
        body.append(f'<tr data-metric="{esc(row.metric)}">{"".join(cells)}</tr>')
    notes = "".join(f'<p class="warning">warning: {esc(w)}</p>' for w in warnings(inputs.results, rows))
    return f'<section id="headline"><h2>Headline metrics</h2>{table(headers, body, "headline-table")}{notes}</section>'


def _subtask_metrics(results: Mapping[str, Any]) -> list[str]:
    names = {k for values in (results.get("subtasks") or {}).values() for k in values}
    return sorted(k for k in names if not k.endswith("_stderr"))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def subtask_section(inputs: ReportInputs) -> str:
    subtasks = inputs.results.get("subtasks") or {}
    if not subtasks:
        return ""
    base_subtasks = (inputs.base_results or {}).get("subtasks") or {}
    tests = (inputs.comparison or {}).get("significance_by_subtask") or {}
    parts = ['<section id="subtasks"><h2>Subtasks</h2>']
    for metric in _subtask_metrics(inputs.results):
        bars = []
        for name, values in subtasks.items():
            value = _number(values.get(metric))
            if value is None:
                continue
            base = base_subtasks.get(name) or {}
            bars.append(plots.SubtaskBar(name, value, _number(values.get(f"{metric}_stderr")),
                                         _number(base.get(metric)), _number(base.get(f"{metric}_stderr"))))  # fmt: skip
        bars.sort(key=lambda b: (-b.value, b.subtask))
        plot_id = f"subtasks-{_slug(metric)}"
        # The bars and, with a base, the differences side by side: one subtask per row in both.
        parts.append(
            f'<div class="plots"><div class="plot" id="{plot_id}"><h3>{esc(metric)} by subtask ({len(bars)})</h3>'
            f"{plots.subtask_bars(plot_id, metric, bars)}</div>"
        )
        compared = any(b.base is not None for b in bars)
        if compared:
            diffs = []
            for b in bars:
                if b.base is None:
                    continue
                test = (tests.get(b.subtask) or {}).get(metric) or {}
                diffs.append(plots.DifferenceBar(b.subtask, b.value - b.base, bool(test.get("significant")),
                                                 _number(test.get("p_value"))))  # fmt: skip
            diffs.sort(key=lambda d: (-d.difference, d.subtask))
            diff_id = f"difference-{_slug(metric)}"
            significant = sum(d.significant for d in diffs)
            parts.append(
                f'<div class="plot" id="{diff_id}"><h3>{esc(metric)}: fine-tuned minus base '
                f"({significant} of {len(diffs)} significant)</h3>{plots.difference_bars(diff_id, metric, diffs)}</div>"
            )
        parts.append("</div>")
        parts.append(_subtask_table(metric, bars, tests, compared))
    parts.append("</section>")
    return "".join(parts)


def _subtask_table(metric: str, bars: Sequence[plots.SubtaskBar], tests: Mapping[str, Any], compared: bool) -> str:
    headers = ["subtask", metric, "stderr"]
    if compared:
        headers += ["base", "difference", "p-value", "significance"]
    rows = []
    for b in bars:
        cells = [f"<td>{esc(b.subtask)}</td>", num(b.value), num(b.stderr)]
        if compared:
            test = (tests.get(b.subtask) or {}).get(metric) or {}
            diff = b.value - b.base if b.base is not None else None
            mark = ("regressed" if test.get("regressed") else "significant" if test.get("significant") else "n.s."
                    ) if test else ""  # fmt: skip
            cells += [num(b.base), num(diff, fmt(diff, signed=True) if diff is not None else None),
                      num(_number(test.get("p_value")), fmt_p(_number(test.get("p_value")))),
                      f'<td class="{_mark_class(mark)}">{esc(mark)}</td>']  # fmt: skip
        rows.append(f'<tr data-subtask="{esc(b.subtask)}">{"".join(cells)}</tr>')
    return (
        f"<details><summary>{esc(metric)} by subtask: table</summary>"
        f"{table(headers, rows, f'subtask-table-{_slug(metric)}')}</details>"
    )


def histogram_bins(counts: Counter[float]) -> tuple[list[float], list[int]]:
    """Edges and counts: one bar per value when there are few distinct values, else equal-width bins."""
    values = sorted(counts)
    if len(values) <= MAX_DISTINCT_BINS:
        gaps = [b - a for a, b in itertools.pairwise(values)]
        half = (min(gaps) if gaps else 1.0) / 2
        return [v - half for v in values] + [values[-1] + half], [counts[v] for v in values]
    low, high = values[0], values[-1]
    width = (high - low) / HISTOGRAM_BINS
    edges = [low + i * width for i in range(HISTOGRAM_BINS)] + [high]
    binned = [0] * HISTOGRAM_BINS
    for value, n in counts.items():
        binned[min(int((value - low) / width), HISTOGRAM_BINS - 1)] += n
    return edges, binned


def _histogram_metrics(inputs: ReportInputs) -> list[str]:
    """Judge metrics always (their scores are the point), else every metric with a non-binary sample score."""
    per_metric = (inputs.results.get("details") or {}).get("per_metric") or {}
    judged = [m for m in per_metric if isinstance(per_metric[m], Mapping)]
    non_binary = [m for m, c in inputs.digest.score_counts.items() if set(c) - {0.0, 1.0}]
    return sorted(set(judged) | set(non_binary))


def histogram_section(inputs: ReportInputs) -> str:
    metrics = _histogram_metrics(inputs)
    if not metrics:
        return ""
    parts = ['<section id="histograms"><h2>Score distributions</h2><div class="plots">']
    for metric in metrics:
        counts = inputs.digest.score_counts.get(metric, Counter())
        failures = parse_failures(inputs.results, metric)
        failure_text = f"{failures} parse failures" if failures is not None else "parse failures not recorded"
        plot_id = f"histogram-{_slug(metric)}"
        body = (plots.histogram(plot_id, metric, *histogram_bins(counts)) if counts
                else '<p class="warning">no parsed scores</p>')  # fmt: skip
        parts.append(
            f'<div class="plot" id="{plot_id}" data-metric="{esc(metric)}"><h3>{esc(metric)}</h3>'
            f'<p>{sum(counts.values())} scored samples; <span class="parse-failures" '
            f'data-value="{failures if failures is not None else ""}">{esc(failure_text)}</span></p>{body}</div>'
        )
    parts.append("</div></section>")
    return "".join(parts)


def _sample_rows(samples: Sequence[ListedSample], href: str, extra: str) -> list[str]:
    rows = []
    for s in samples:
        link = f'<a href="{esc(href)}#L{s.line}" data-line="{s.line}">samples.jsonl:{s.line}</a>'
        cells = [f"<td>{link}</td>", f"<td><code>{esc(s.id)}</code></td>", f"<td>{esc(s.subtask or '')}</td>",
                 num(s.score)]  # fmt: skip
        if extra == "seconds":
            cells.append(num(s.seconds, f"{s.seconds:.3f}" if s.seconds is not None else None))
            cells.append(num(float(s.requests), str(s.requests)) if s.requests is not None else "<td></td>")
        if extra == "base":
            cells.append(num(s.base_score))
        cells += [f"<td>{esc(s.target)}</td>", f"<td>{esc(s.answer)}</td>"]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return rows


def slowest_note(timings: TimingDigest | None) -> str:
    """What the slowest list rests on, or why there is none."""
    if timings is None:
        return "this execution recorded no per-sample model time (no sample_timings.jsonl)."
    if not timings.answered:
        return "every answer came from the dataset: no model was called, so no sample has a model time."
    if not timings.measured:
        return (f"{timings.answered} samples were answered by a model backend that does not time single "
                "requests (it batches them), so no per-sample time was measured.")  # fmt: skip
    if timings.cached_only == timings.answered:
        return (f"every answer of the {timings.answered} samples came from the response cache: "
                "no model time was spent (0 s each).")  # fmt: skip
    return (
        f"{timings.measured} samples answered by the model ({timings.cached_only} wholly from the response "
        "cache); a sample's time runs from each request's first send to its answer, summed over its requests."
    )


def samples_section(inputs: ReportInputs) -> str:
    digest, href = inputs.digest, inputs.samples_href
    score = digest.primary or "score"
    base_headers = ["line", "id", "subtask", score]
    tail = ["target", "answer"]
    parts = ['<section id="samples"><h2>Samples</h2>',
             f"<h3>Lowest {esc(score)} (most wrong)</h3>"]  # fmt: skip
    if digest.most_wrong:
        parts.append(table([*base_headers, *tail], _sample_rows(digest.most_wrong, href, ""), "most-wrong"))
    else:
        parts.append('<p class="muted">no sample scored below the maximum.</p>')
    parts.append("<h3>Slowest (model seconds)</h3>")
    parts.append(f'<p class="muted" id="slowest-note">{esc(slowest_note(digest.timings))}</p>')
    if digest.slowest:
        headers = [*base_headers, "model seconds", "requests", *tail]
        parts.append(table(headers, _sample_rows(digest.slowest, href, "seconds"), "slowest"))
    if digest.regressed:
        parts.append(f"<h3>Regressed: the base scored higher ({len(digest.regressed)} shown)</h3>")
        headers = [*base_headers, f"base {score}", *tail]
        parts.append(table(headers, _sample_rows(digest.regressed, href, "base"), "regressed"))
    parts.append("</section>")
    return "".join(parts)


def _duration(step: StepTime) -> str:
    try:
        start = datetime.fromisoformat(step.start_time or "")
        end = datetime.fromisoformat(step.end_time or "")
    except ValueError:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def provenance_section(inputs: ReportInputs) -> str:
    results, spec = inputs.results, inputs.spec or {}
    details = results.get("details") or {}
    facts: list[tuple[str, Any]] = [
        ("evaluation", results.get("name")),
        ("type", results.get("eval_type")),
        ("model", results.get("model")),
        ("base model", (inputs.base_results or {}).get("model")),
        ("judge model", details.get("judge_model")),
        ("benchmark", details.get("benchmark") or spec.get("benchmark")),
        ("dataset sha256", results.get("dataset_sha256")),
        ("samples", results.get("num_samples")),
        ("scoring mode", details.get("scoring_mode")),
        ("few-shot", details.get("num_fewshot")),
        ("aggregation", details.get("aggregation")),
        ("confidence interval", details.get("confidence_interval")),
        ("results schema", results.get("schema_version")),
    ]
    rows = [
        f'<tr><th scope="row">{esc(k)}</th><td data-field="{_slug(k)}"><code>{esc(mask(text_of(v)))}</code></td></tr>'
        for k, v in facts
        if v not in (None, "", [], {})
    ]
    parts = ['<section id="provenance"><h2>Provenance</h2>', table(["", ""], rows, "provenance-table")]
    hyper = spec.get("hyperparameters") or {}
    if hyper:
        hp_rows = [f"<tr><td>{esc(k)}</td><td>{esc(mask(text_of(v)))}</td></tr>" for k, v in sorted(hyper.items())]
        parts.append("<h3>Hyperparameters</h3>" + table(["name", "value"], hp_rows, "hyperparameters"))
    versions = results.get("library_versions") or {}
    if versions:
        v_rows = [f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in sorted(versions.items())]
        parts.append("<h3>Library versions</h3>" + table(["library", "version"], v_rows, "library-versions"))
    if inputs.steps:
        s_rows = [
            f"<tr><td>{esc(s.name)}</td><td>{esc(s.status or '')}</td><td>{esc(s.start_time or '-')}</td>"
            f"<td>{esc(s.end_time or '-')}</td><td>{_duration(s)}</td></tr>"
            for s in inputs.steps
        ]
        parts.append("<h3>Steps</h3>" + table(["step", "status", "start", "end", "duration"], s_rows, "steps"))
    parts.append("</section>")
    return "".join(parts)


def render_html(inputs: ReportInputs) -> str:
    results = inputs.results
    title = f"Evaluation report: {results.get('name', 'evaluation')}"
    sections = [
        headline_section(inputs),
        subtask_section(inputs),
        histogram_section(inputs),
        samples_section(inputs),
        provenance_section(inputs),
    ]
    nav = "".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label, body in zip(
            ("headline", "subtasks", "histograms", "samples", "provenance"),
            ("Headline", "Subtasks", "Scores", "Samples", "Provenance"),
            sections,
            strict=True,
        )
        if body
    )
    subtitle = (f"{esc(str(results.get('eval_type', '')))} · model <code>{esc(mask(str(results.get('model', ''))))}"
                f"</code> · {esc(str(results.get('num_samples', '')))} samples")  # fmt: skip
    if inputs.comparison is not None:
        subtitle += f" · compared with base <code>{esc(mask(str((inputs.base_results or {}).get('model', ''))))}</code>"
    # default-src 'none': the page cannot fetch anything, even if a value in it tried to.
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{subtitle}</p>"
        f"<nav>{nav}</nav></header>{''.join(sections)}</body></html>\n"
    )


# -- files ------------------------------------------------------------------------------------------


def _json_if_exists(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def load_inputs(output_uri: str, steps: Sequence[StepTime] = (), digest: SampleDigest | None = None) -> ReportInputs:
    """The report's inputs from an execution's output folder (local or s3://). The sample digest is the
    one given (the Report step's, made as it wrote samples.jsonl), else read from samples.jsonl, streamed."""
    results = json.loads(storage.read_text(storage.join(output_uri, "results.json")))
    base_results = _json_if_exists(storage.join(output_uri, "base", "results.json"))
    if digest is None:
        digest = _read_digest(output_uri, primary_metric(results), with_base=base_results is not None)
    return ReportInputs(
        results=results,
        digest=digest,
        comparison=_json_if_exists(storage.join(output_uri, "comparison.json")),
        base_results=base_results,
        spec=_json_if_exists(storage.join(output_uri, "spec.json")),
        steps=list(steps),
    )


def _read_digest(output_uri: str, primary: str | None, *, with_base: bool) -> SampleDigest:
    timings = read_timings(output_uri, LISTED)
    with storage.open_text(storage.join(output_uri, "samples.jsonl")) as lines:
        if not with_base:
            return digest_samples(lines, primary, timings=timings)
        with storage.open_text(storage.join(output_uri, "base", "samples.jsonl")) as base_lines:
            return digest_samples(lines, primary, base_lines, timings)


def write_report_html(
    output_uri: str, report_started: datetime, kms_key_id: str | None = None, digest: SampleDigest | None = None
) -> str:
    """The Report step's report.html, from the files next to it, the recorded step times and ``digest``
    (the samples' digest the Report step made as it wrote them; None: read samples.jsonl again);
    written atomically. Returns its URI."""
    steps = [*recorded_step_times(output_uri), StepTime("Report", "Executing", report_started.isoformat(),
                                                        now().isoformat())]  # fmt: skip
    uri = storage.join(output_uri, "report.html")
    # A retried Report step renders other step times around the same results.
    storage.write_text_keeping_first(uri, render_html(load_inputs(output_uri, steps, digest)), kms_key_id=kms_key_id)
    return uri
