"""The report's histogram is drawn once, on a figure each thread reuses, inside fixed margins: the same
input gives the same SVG whatever was drawn before, and every label stays inside the figure."""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest

from evalstack.results import plots
from evalstack.results.html_report import histogram_bins

ROUGE = Counter({i / 40: 1 + i % 3 for i in range(40)})
JUDGE = Counter({1.0: 3, 2.0: 10, 3.0: 25, 4.0: 7, 5.0: 1})


def _in_new_thread(draw) -> str:
    out: list[str] = []
    thread = threading.Thread(target=lambda: out.append(draw()))
    thread.start()
    thread.join()
    return out[0]


def test_a_histogram_is_the_same_whatever_was_drawn_before() -> None:
    def rouge() -> str:
        return plots.histogram("histogram-rouge1", "rouge1", *histogram_bins(ROUGE))

    first = _in_new_thread(rouge)  # a new thread draws on a new figure
    plots.histogram("histogram-judge", "helpfulness", *histogram_bins(JUDGE))
    again = rouge()
    assert again == first
    _, counts = histogram_bins(ROUGE)
    assert len(re.findall(r'<g id="histogram-rouge1-bin-\d+"', again)) == len(counts) == 20
    assert "helpfulness" not in again and "histogram-judge" not in again  # nothing left of the other one
    assert "rouge1 per sample" in again


@pytest.mark.parametrize(
    ("metric", "counts"),
    [
        ("rouge1", ROUGE),
        ("helpfulness", JUDGE),
        ("accuracy_on_many", Counter({i / 1000: 1_000 + 997 * i for i in range(2_000)})),  # millions of samples
        ("reward", Counter({-1e6 + i * 1_000.5: 5 + i for i in range(50)})),  # large, negative values
        ("a_custom_scorer_key_" * 4, ROUGE),  # a long name: the label is made smaller
    ],
)
def test_every_label_stays_inside_the_histogram(metric: str, counts: Counter[float]) -> None:
    svg = plots.histogram("histogram-x", metric, *histogram_bins(counts))
    assert f"{metric} per sample" in svg
    figure = plots._reused.histogram.figure  # the figure just drawn, with its labels laid out
    box = figure.get_tightbbox()  # inches, every artist's extent
    width, height = figure.get_size_inches()
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (box, metric)
