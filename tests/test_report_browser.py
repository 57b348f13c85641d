"""In a real browser (Playwright driving Debian's Chromium): report.html's plots render with one bar per
subtask and opening it from disk makes no network request; in ``evalstack view``, the list, its
filters, a report and a comparison of two executions with a delta read from the page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from evalstack.catalog.benchmarks import MMLU_SUBJECTS
from evalstack.results.html_report import load_inputs, render_html
from tests.support.browser import chromium, screenshot_on_failure, watch_requests
from tests.support.report_data import read_json, synthesize_mmlu_comparison
from tests.test_view import _id, local_runs, viewer  # noqa: F401 - the executions and server, shared


def test_report_renders_every_subtask_bar_offline(tmp_path: Path) -> None:
    output = tmp_path / "run"
    synthesize_mmlu_comparison(str(output), {s: 8 for s in MMLU_SUBJECTS}, seed=11)
    report = output / "report.html"
    report.write_text(render_html(load_inputs(str(output))))
    comparison = read_json(str(output), "comparison.json")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests = watch_requests(page, report.as_uri())
        page.goto(report.as_uri())
        with screenshot_on_failure(page, tmp_path, "report"):
            assert page.title() == "Evaluation report: mmlu-comparison"
            for selector in ("#subtasks-acc svg g[id^='subtasks-acc-bar-']",
                             "#subtasks-acc svg g[id^='subtasks-acc-base-']",
                             "#difference-acc svg g[id^='difference-acc-diff-']"):  # fmt: skip
                assert page.locator(selector).count() == len(MMLU_SUBJECTS), selector
            # Each bar is drawn: a visible path with a real size.
            box = page.locator("g[id='subtasks-acc-bar-0'] path").bounding_box()
            assert box is not None and box["width"] > 1 and box["height"] > 1, box
            shown = page.locator("#headline-table tr[data-metric='acc'] td").nth(4).inner_text()
            assert shown == f"{comparison['improvements']['acc']:+.4f}"
            assert requests.seen == [report.as_uri()], requests.seen
            assert requests.refused == []
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)


def test_the_request_watch_sees_a_page_that_reaches_out(tmp_path: Path) -> None:
    """The check above can fail: a page loading one image from the network is caught (and refused)."""
    page_file = tmp_path / "leaky.html"
    page_file.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    with chromium() as browser:
        page = browser.new_page()
        requests = watch_requests(page, page_file.as_uri())
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        assert requests.refused == ["http://127.0.0.1:9/pixel.png"]


def test_viewer_list_filter_report_and_compare(viewer, tmp_path: Path) -> None:  # noqa: F811
    client, (first, second) = viewer
    base_url = str(client.base_url)
    ours, theirs = first.results()["metrics"], second.results()["metrics"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests = watch_requests(page, base_url)
        with screenshot_on_failure(page, tmp_path, "viewer"):
            page.goto(base_url)
            rows = page.locator("#executions tbody tr")
            assert rows.count() == 2
            page.select_option("#filter-type", "benchmark")
            page.click("#apply-filters")
            assert page.locator("#executions").count() == 0 and "no executions match" in page.content()
            page.select_option("#filter-type", "custom_scorer")
            page.fill("#filter-model", "listed")
            page.click("#apply-filters")
            assert "type=custom_scorer" in page.url and rows.count() == 2

            page.locator(f"tr[data-execution='{_id(first)}'] a", has_text="report").click()
            assert page.title().startswith("Evaluation report: first")
            shown = page.locator("#headline-table tr[data-metric='rouge1'] td").first.inner_text()
            assert shown == f"{ours['rouge1']:.4f}"
            assert "every answer came from the dataset" in page.locator("#slowest-note").inner_text()
            page.go_back()

            for execution in (first, second):
                page.check(f"tr[data-execution='{_id(execution)}'] input[type=checkbox]")
            page.click("#compare-button")
            assert page.url.startswith(f"{base_url}compare?")
            # The list is newest first, so the form sends the second execution first: it is the reference.
            assert parse_qs(urlsplit(page.url).query)["id"] == [_id(second), _id(first)]
            delta = page.locator("#compare-metrics tr[data-metric='rouge1'] td").nth(2).inner_text()
            assert delta == f"{ours['rouge1'] - theirs['rouge1']:+.4f}"
            # The grouped bars: one per metric and execution, drawn, each carrying its number.
            metrics = sorted(ours)
            bars = page.locator("#compare-metrics-plot svg g[id^='compare-metrics-plot-']")
            assert bars.count() == 2 * len(metrics)
            first_bar = page.locator(f"g[id='compare-metrics-plot-{metrics.index('rouge1')}-1']")
            assert float(first_bar.get_attribute("data-value")) == ours["rouge1"]
            box = first_bar.locator("path").bounding_box()
            assert box is not None and box["width"] > 1 and box["height"] > 1, box
            assert requests.refused == [], requests.refused
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
