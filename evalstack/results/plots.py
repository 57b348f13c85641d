"""The report's plots as inline SVG, drawn with matplotlib (no pyplot state, so threads may render at once).

Every bar carries an SVG id, ``<plot id>-<series>-<index>``, so a test (or a reader's browser tools)
can count and find them; bars drawn from a number also carry it exactly in ``data-value`` and show it
in a ``<title>`` (the browser's tooltip). Text stays text (``svg.fonttype: none``): the file is smaller and the
labels can be searched and copied. Output is deterministic for the same input (fixed hash salt, no
date), so a report can be diffed.
"""

from __future__ import annotations

import html
import io
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib
import matplotlib.text
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path
from matplotlib.ticker import EngFormatter, MaxNLocator

CANDIDATE_COLOUR = "#3366aa"
BASE_COLOUR = "#bbbbbb"
BETTER_COLOUR = "#2e8b57"
WORSE_COLOUR = "#c0392b"
NEUTRAL_COLOUR = "#999999"
# One colour per compared execution (at most five are compared).
EXECUTION_COLOURS = ("#3366aa", "#e69500", "#2e8b57", "#8e44ad", "#c0392b")
Z95 = 1.96
_ROW_INCHES = 0.24
# The histogram's size and margins (left, right, bottom, top), fixed so that one draw renders it (a
# figure cropped to its contents is drawn twice): room for the y label and y tick labels of at most five
# characters (EngFormatter's "12.5k"), for one row of x tick labels and the x label (made smaller when
# it is too long), and for half an x tick label past either end.
_HISTOGRAM_INCHES = (5.0, 2.4)
_HISTOGRAM_MARGIN_INCHES = (0.8, 0.3, 0.5, 0.12)
_SVG_PREAMBLE = re.compile(r"^.*?(?=<svg )", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


_reused = threading.local()  # figures a thread draws again and again (see _histogram_axes)


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


@dataclass(frozen=True)
class Shown:
    """The number a bar stands for, and its tooltip."""

    value: float
    title: str


def _svg(fig: Figure, shown: Mapping[str, Shown] | None = None, *, tight: bool = True) -> str:
    """``fig`` as inline SVG; ``tight`` crops it to its contents (which takes a second draw)."""
    # Labels are names from the data (subtasks, executions, metrics): a "$" in one is text, not mathtext.
    for text in fig.findobj(matplotlib.text.Text):
        text.set_parse_math(False)
    buffer = io.StringIO()
    plain = {"svg.fonttype": "none", "svg.hashsalt": "evalstack-report", "text.parse_math": False}
    with matplotlib.rc_context(plain):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight" if tight else None)
    text = _METADATA.sub("", _SVG_PREAMBLE.sub("", buffer.getvalue(), count=1), count=1)
    for gid, bar in (shown or {}).items():
        text = text.replace(
            f'<g id="{gid}">', f'<g id="{gid}" data-value="{bar.value!r}"><title>{html.escape(bar.title)}</title>', 1
        )
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
    shown = {}
    for k, (name, values, stderr, colour, label) in enumerate(series):
        ys = [p + offset - k * height for p in positions]
        drawn = ax.barh(ys, values, height=height, xerr=_errors(stderr), color=colour, label=label,
                        error_kw={"ecolor": "#333333", "elinewidth": 0.8, "capsize": 2})  # fmt: skip
        for i, (patch, value) in enumerate(zip(drawn.patches, values, strict=True)):
            patch.set_gid(f"{plot_id}-{name}-{i}")
            if name == "bar" or bars[i].base is not None:  # a missing base is drawn as 0 but has no number
                shown[f"{plot_id}-{name}-{i}"] = Shown(value, f"{bars[i].subtask}, {label}: {value:.4f}")
    ax.set_yticks(positions, [b.subtask for b in bars], fontsize=8)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlabel(f"{metric} (error bars: 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    if with_base:
        ax.legend(loc="lower right", fontsize=8)
    return _svg(fig, shown)


def _sign_colour(value: float) -> str:
    return BETTER_COLOUR if value > 0 else WORSE_COLOUR if value < 0 else NEUTRAL_COLOUR


def difference_bars(plot_id: str, metric: str, bars: Sequence[DifferenceBar], xlabel: str | None = None) -> str:
    """A difference per subtask, in the given order. With ``xlabel`` (no significance test behind the
    bars, e.g. two executions compared) every bar is coloured by its sign; otherwise fine-tuned minus
    base, with significant differences coloured and starred."""
    fig = _figure(len(bars))
    ax = fig.add_subplot()
    positions = list(range(len(bars)))[::-1]
    if xlabel is None:
        colours = [_sign_colour(b.difference) if b.significant else NEUTRAL_COLOUR for b in bars]
        labels = [f"{b.subtask} *" if b.significant else b.subtask for b in bars]
        xlabel = f"{metric}: fine-tuned minus base (* significant at p < 0.05)"
    else:
        colours = [_sign_colour(b.difference) for b in bars]
        labels = [b.subtask for b in bars]
    drawn = ax.barh(positions, [b.difference for b in bars], height=0.7, color=colours)
    shown = {}
    for i, (patch, bar) in enumerate(zip(drawn.patches, bars, strict=True)):
        patch.set_gid(f"{plot_id}-diff-{i}")
        shown[f"{plot_id}-diff-{i}"] = Shown(bar.difference, f"{bar.subtask}: {bar.difference:+.4f}")
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig, shown)


def metric_bars(plot_id: str, metrics: Sequence[str], executions: Sequence[str],
                values: Sequence[Sequence[float | None]]) -> str:  # fmt: skip
    """Grouped bars: one panel per metric (each on its own scale), one bar per execution, coloured by
    execution. ``values[m][e]`` is metric m of execution e; a missing value draws no bar."""
    fig = Figure(figsize=(6.4, 0.5 + len(metrics) * (0.35 + 0.22 * len(executions))), layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    positions = list(range(len(executions)))[::-1]  # the first execution on top
    colours = [EXECUTION_COLOURS[e % len(EXECUTION_COLOURS)] for e in range(len(executions))]
    shown = {}
    for m, (ax, metric) in enumerate(zip(axes, metrics, strict=True)):
        drawn = ax.barh(positions, [v if v is not None else 0.0 for v in values[m]], height=0.75, color=colours)
        for e, (patch, value) in enumerate(zip(drawn.patches, values[m], strict=True)):
            if value is None:
                patch.set_visible(False)
                continue
            gid = f"{plot_id}-{m}-{e}"
            patch.set_gid(gid)
            shown[gid] = Shown(value, f"{metric}, {executions[e]}: {value:.4f}")
        ax.set_yticks(positions, executions, fontsize=7)
        ax.set_title(metric, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    return _svg(fig, shown)


def _histogram_axes() -> Axes:
    """This thread's histogram axes, empty. Made once per thread: a report draws one histogram per
    metric key (four for ROUGE), and a new figure costs about as much as drawing it."""
    ax: Axes | None = getattr(_reused, "histogram", None)
    if ax is None:
        width, height = _HISTOGRAM_INCHES
        left, right, bottom, top = _HISTOGRAM_MARGIN_INCHES
        fig = Figure(figsize=_HISTOGRAM_INCHES)
        fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
        ax = fig.add_subplot()
        ax.yaxis.set_major_locator(MaxNLocator("auto", steps=[1, 2, 2.5, 5, 10], integer=True))  # whole samples
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))  # 1.5k, 250k, 1.2M: the label fits the margin
        ax.set_ylabel("samples")
        ax.grid(axis="y", alpha=0.3)
        _reused.histogram = ax
    for container in list(ax.containers):
        container.remove()
    ax.relim()  # forget the removed bars' limits (nothing is left to measure: this costs nothing)
    return ax


def histogram(plot_id: str, metric: str, edges: Sequence[float], counts: Sequence[int]) -> str:
    """Bars over [edges[i], edges[i+1]) with their counts."""
    ax = _histogram_axes()
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    drawn = ax.bar(edges[:-1], counts, width=widths, align="edge", color=CANDIDATE_COLOUR, edgecolor="white")
    for i, patch in enumerate(drawn.patches):
        patch.set_gid(f"{plot_id}-bin-{i}")
    label = f"{metric} per sample"
    width, _ = _HISTOGRAM_INCHES
    left, right, _, _ = _HISTOGRAM_MARGIN_INCHES
    # Centred under the axes; the renderers' layout of a text differs from its path's width by a few percent.
    room = 0.9 * (2 * min(left, right) + (width - left - right))
    ax.set_xlabel(label, fontsize=_fitting_size(label, room))
    return _svg(ax.figure, tight=False)


def _fitting_size(text: str, inches: float) -> float:
    """An axis label's font size: the usual one, or smaller so that ``text`` fits in ``inches`` (a long
    metric name would otherwise run off a figure that is not cropped to its contents)."""
    size = FontProperties(size=matplotlib.rcParams["axes.labelsize"]).get_size_in_points()
    width = text_to_path.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0] / 72
    return size * min(1.0, inches / width) if width else size


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
