"""The report's plots as inline SVG, drawn with matplotlib (no pyplot state, so threads may render at once).

Every bar carries an SVG id, ``<plot id>-<series>-<index>``, so a test (or a reader's browser tools)
can count and find them. Text stays text (``svg.fonttype: none``): the file is smaller and the
labels can be searched and copied. Output is deterministic for the same input (fixed hash salt, no
date), so a report can be diffed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure

CANDIDATE_COLOUR = "#3366aa"
BASE_COLOUR = "#bbbbbb"
BETTER_COLOUR = "#2e8b57"
WORSE_COLOUR = "#c0392b"
NEUTRAL_COLOUR = "#999999"
Z95 = 1.96
_ROW_INCHES = 0.24
_SVG_PREAMBLE = re.compile(r"^.*?(?=<svg )", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


@dataclass(frozen=True)
class SubtaskBar:
    subtask: str
    value: float
    stderr: float | None = None
    base: float | None = None
    base_stderr: float | None = None


@dataclass(frozen=True)
class DifferenceBar:
    subtask: str
    difference: float
    significant: bool
    p_value: float | None


@dataclass(frozen=True)
class HistoryPoint:
    when: str  # ISO time
    value: float | None
    label: str


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "evalstack-report"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = _METADATA.sub("", _SVG_PREAMBLE.sub("", buffer.getvalue(), count=1), count=1)
    return text.replace("<svg ", '<svg role="img" ', 1)


def _figure(rows: int, width: float = 5.4) -> Figure:
    return Figure(figsize=(width, max(1.6, 0.8 + _ROW_INCHES * rows)), layout="constrained")


def _errors(values: Sequence[float | None]) -> list[float]:
    return [Z95 * v if v is not None else 0.0 for v in values]


def subtask_bars(plot_id: str, metric: str, bars: Sequence[SubtaskBar]) -> str:
    """Horizontal bars, one per subtask in the given order, with 95% error bars; base bars beside them."""
    with_base = any(b.base is not None for b in bars)
    fig = _figure(len(bars) * (1.5 if with_base else 1))
    ax = fig.add_subplot()
    positions = list(range(len(bars)))[::-1]  # first bar on top
    height = 0.4 if with_base else 0.7
    offset = height / 2 if with_base else 0.0
    series = [("bar", [b.value for b in bars], [b.stderr for b in bars], CANDIDATE_COLOUR, "fine-tuned")]
    if with_base:
        series.append(("base", [b.base or 0.0 for b in bars], [b.base_stderr for b in bars], BASE_COLOUR, "base"))
    for k, (name, values, stderr, colour, label) in enumerate(series):
        ys = [p + offset - k * height for p in positions]
        drawn = ax.barh(ys, values, height=height, xerr=_errors(stderr), color=colour, label=label,
                        error_kw={"ecolor": "#333333", "elinewidth": 0.8, "capsize": 2})  # fmt: skip
        for i, patch in enumerate(drawn.patches):
            patch.set_gid(f"{plot_id}-{name}-{i}")
    ax.set_yticks(positions, [b.subtask for b in bars], fontsize=8)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlabel(f"{metric} (error bars: 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    if with_base:
        ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def difference_bars(plot_id: str, metric: str, bars: Sequence[DifferenceBar]) -> str:
    """Fine-tuned minus base per subtask; significant differences coloured and starred."""
    fig = _figure(len(bars))
    ax = fig.add_subplot()
    positions = list(range(len(bars)))[::-1]
    colours = [(BETTER_COLOUR if b.difference > 0 else WORSE_COLOUR) if b.significant else NEUTRAL_COLOUR for b in bars]
    drawn = ax.barh(positions, [b.difference for b in bars], height=0.7, color=colours)
    for i, patch in enumerate(drawn.patches):
        patch.set_gid(f"{plot_id}-diff-{i}")
    labels = [f"{b.subtask} *" if b.significant else b.subtask for b in bars]
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_xlabel(f"{metric}: fine-tuned minus base (* significant at p < 0.05)")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def histogram(plot_id: str, metric: str, edges: Sequence[float], counts: Sequence[int]) -> str:
    """Bars over [edges[i], edges[i+1]) with their counts."""
    fig = Figure(figsize=(5.0, 2.4), layout="constrained")
    ax = fig.add_subplot()
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    drawn = ax.bar(edges[:-1], counts, width=widths, align="edge", color=CANDIDATE_COLOUR, edgecolor="white")
    for i, patch in enumerate(drawn.patches):
        patch.set_gid(f"{plot_id}-bin-{i}")
    ax.set_xlabel(f"{metric} per sample")
    ax.set_ylabel("samples")
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def history_line(plot_id: str, metric: str, points: Sequence[HistoryPoint]) -> str:
    """The metric of successive evaluations, in order, each point labelled (e.g. with its version)."""
    shown = [p for p in points if p.value is not None]
    fig = Figure(figsize=(7.0, 2.8), layout="constrained")
    ax = fig.add_subplot()
    xs = list(range(len(shown)))
    ax.plot(xs, [p.value for p in shown], color=CANDIDATE_COLOUR, marker="o")
    for i, point in enumerate(shown):
        ax.annotate(point.label, (i, point.value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(xs, [p.when[:16].replace("T", " ") for p in shown], fontsize=7, rotation=20)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    for line in ax.get_lines():
        line.set_gid(f"{plot_id}-line")
    return _svg(fig)
