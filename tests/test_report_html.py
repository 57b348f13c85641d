"""report.html and the summary table: every number shown equals the one in results.json or comparison.json.

The outputs are synthesized with the engine's own aggregation and comparison (tests/support/report_data.py),
or come from a real local pipeline run (the Report step test).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from evalstack import storage
from evalstack.engine.run import Report
from evalstack.evaluate import CustomScorerEvaluator
from evalstack.results.html_report import digest_samples, histogram_bins, load_inputs, render_html
from evalstack.results.summary import fmt, fmt_p, summary_html, summary_text
from evalstack.results.tracking import log_to_mlflow
from evalstack.results.writer import EvaluationResult
from evalstack.spec import EvaluationSpec, MlflowSpec
from tests.conftest import EXAMPLES
from tests.support.html_tables import body_rows, parse
from tests.support.report_data import read_json, synthesize_mmlu_comparison

SUBJECTS = ["anatomy", "astronomy", "virology", "marketing", "philosophy", "nutrition"]


@pytest.fixture
def comparison_output(tmp_path: Path) -> str:
    output = str(tmp_path / "run")
    synthesize_mmlu_comparison(output, {s: 30 for s in SUBJECTS}, seed=3)
    return output


def _page(output: str) -> str:
    return render_html(load_inputs(output))


def test_headline_numbers_equal_results_and_comparison(comparison_output: str) -> None:
    results, comparison = read_json(comparison_output, "results.json"), read_json(comparison_output, "comparison.json")
    rows = body_rows(parse(_page(comparison_output)).tables["headline-table"])
    assert [r.attrs["data-metric"] for r in rows] == sorted(results["metrics"]) == ["acc", "accuracy", "score"]
    for row in rows:
        name = row.attrs["data-metric"]
        _, value, stderr, ci, base, difference, p_value, mark, _ = row.cells
        assert value.value == results["metrics"][name] and value.text == fmt(results["metrics"][name])
        assert stderr.value == results["stderr"].get(name)
        assert base.value == comparison["base"][name]
        assert difference.value == comparison["improvements"][name]
        assert difference.text == f"{comparison['improvements'][name]:+.4f}"
        test = comparison["significance"].get(name)
        assert p_value.value == (test["p_value"] if test else None)
        if test:
            assert p_value.text == fmt_p(test["p_value"])
            assert mark.text == ("regressed" if test["regressed"] else "significant" if test["significant"] else "n.s.")
        if name in results["confidence_intervals"]:
            low, high = results["confidence_intervals"][name]
            assert (float(ci.attrs["data-low"]), float(ci.attrs["data-high"])) == (low, high)
            assert ci.text == f"[{low:.4f}, {high:.4f}]"
    assert {r.attrs["data-metric"] for r in rows if "data-low" in r.cells[3].attrs} == {"acc"}


def test_subtask_numbers_equal_results_base_and_significance(comparison_output: str) -> None:
    results = read_json(comparison_output, "results.json")
    base = read_json(comparison_output, "base/results.json")
    comparison = read_json(comparison_output, "comparison.json")
    rows = body_rows(parse(_page(comparison_output)).tables["subtask-table-acc"])
    shown = [r.attrs["data-subtask"] for r in rows]
    assert sorted(shown) == sorted(SUBJECTS)
    # Sorted by the fine-tuned value, best first.
    assert shown == sorted(SUBJECTS, key=lambda s: (-results["subtasks"][s]["acc"], s))
    for row in rows:
        subject = row.attrs["data-subtask"]
        _, value, stderr, base_value, difference, p_value, mark = row.cells
        ours, theirs = results["subtasks"][subject], base["subtasks"][subject]
        test = comparison["significance_by_subtask"][subject]["acc"]
        assert value.value == ours["acc"] and value.text == fmt(ours["acc"])
        assert stderr.value == ours["acc_stderr"]
        assert base_value.value == theirs["acc"]
        assert difference.value == ours["acc"] - theirs["acc"]
        assert p_value.value == test["p_value"]
        assert mark.text == ("regressed" if test["regressed"] else "significant" if test["significant"] else "n.s.")


def test_plots_have_one_bar_per_subtask_and_mark_significance(comparison_output: str) -> None:
    page = _page(comparison_output)
    comparison = read_json(comparison_output, "comparison.json")
    for series in ("bar", "base", "diff"):
        plot = "difference-acc" if series == "diff" else "subtasks-acc"
        ids = re.findall(rf'<g id="{plot}-{series}-(\d+)"', page)
        assert sorted(map(int, ids)) == list(range(len(SUBJECTS))), series
    significant = sum(t["acc"]["significant"] for t in comparison["significance_by_subtask"].values())
    assert f"({significant} of {len(SUBJECTS)} significant)" in page


def test_most_wrong_and_regressed_samples_link_to_their_lines(comparison_output: str) -> None:
    page = parse(_page(comparison_output))
    lines = Path(storage.local_path(storage.join(comparison_output, "samples.jsonl"))).read_text().splitlines()
    base = {
        json.loads(line)["id"]: json.loads(line)
        for line in Path(storage.local_path(storage.join(comparison_output, "base", "samples.jsonl")))
        .read_text()
        .splitlines()
    }
    wrong = body_rows(page.tables["most-wrong"])
    regressed = body_rows(page.tables["regressed"])
    assert len(wrong) == 10 and regressed
    for row in wrong + regressed:
        line = int(row.cells[0].text.removeprefix("samples.jsonl:"))
        record = json.loads(lines[line - 1])
        assert row.cells[1].text == record["id"]
        assert record["scores"]["acc"] == 0.0 == row.cells[3].value
    for row in regressed:
        assert base[row.cells[1].text]["scores"]["acc"] == 1.0 == row.cells[4].value
    links = [a["href"] for a in page.links if a.get("data-line")]
    assert all(re.fullmatch(r"samples\.jsonl#L\d+", href) for href in links)


def test_most_wrong_prefers_confident_wrong_answers() -> None:
    records = [
        {"id": "a", "scores": {"acc": 0.0}, "target": 0, "loglikelihoods": [-2.0, -1.9]},  # margin 0.1
        {"id": "b", "scores": {"acc": 1.0}, "target": 0, "loglikelihoods": [-1.0, -3.0]},
        {"id": "c", "scores": {"acc": 0.0}, "target": 1, "loglikelihoods": [-0.5, -4.5]},  # margin 4.0
    ]
    digest = digest_samples([json.dumps(r) for r in records], "acc")
    assert [(s.id, s.line) for s in digest.most_wrong] == [("c", 3), ("a", 1)]
    assert digest.slowest == [] and digest.samples == 3


def test_page_is_self_contained(comparison_output: str) -> None:
    page = _page(comparison_output)
    assert "<script" not in page
    # Only namespace declarations name a URL; nothing is loaded from one.
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert not re.search(r"url\((?!#)", page)  # clip paths refer to ids inside the page
    assert "default-src 'none'" in page


def test_null_metric_shows_its_parse_failures_and_a_warning() -> None:
    results = {
        "name": "judge", "eval_type": "llm_as_judge", "model": "m", "num_samples": 3,
        "metrics": {"helpfulness": 0.5, "correctness": None},
        "stderr": {"helpfulness": 0.25}, "confidence_intervals": {"helpfulness": [-0.57, 1.57]},
        "details": {"per_metric": {"helpfulness": {"parse_failures": 1}, "correctness": {"parse_failures": 3}}},
    }  # fmt: skip
    records = [
        {"id": "1", "scores": {"helpfulness": 0.25}},
        {"id": "2", "scores": {"helpfulness": 0.75}},
        {"id": "3", "scores": {}},
    ]
    from evalstack.results.html_report import ReportInputs

    inputs = ReportInputs(results, digest_samples([json.dumps(r) for r in records], "helpfulness"))
    page = render_html(inputs)
    tables = parse(page).tables
    rows = {r.attrs["data-metric"]: r for r in body_rows(tables["headline-table"])}
    assert rows["correctness"].cells[1].text == "null" and rows["correctness"].cells[-1].value == 3
    assert rows["helpfulness"].cells[1].value == 0.5 and rows["helpfulness"].cells[-1].value == 1
    assert "warning: metric correctness is null: no answer could be parsed (3 parse failures)" in page
    # Histograms: helpfulness has one bar per distinct score; correctness has none, and says so.
    assert len(re.findall(r'<g id="histogram-helpfulness-bin-\d+"', page)) == 2
    assert 'data-value="3">3 parse failures' in page and "no parsed scores" in page

    text = summary_text(results)
    assert "correctness" in text and "null" in text
    assert text.rstrip().endswith("warning: metric correctness is null: no answer could be parsed (3 parse failures)")
    fragment = summary_html({**results, "name": "<b>judge</b>"})
    assert "&lt;b&gt;judge&lt;/b&gt;" in fragment and "<script" not in fragment


def test_summary_text_shows_the_comparison(comparison_output: str) -> None:
    results, comparison = read_json(comparison_output, "results.json"), read_json(comparison_output, "comparison.json")
    text = summary_text(results, comparison)
    acc_line = next(line for line in text.splitlines() if line.startswith("acc "))
    expected = [
        fmt(results["metrics"]["acc"]),
        fmt(results["stderr"]["acc"]),
        fmt(comparison["base"]["acc"]),
        f"{comparison['improvements']['acc']:+.4f}",
        fmt_p(comparison["significance"]["acc"]["p_value"]),
    ]
    assert all(figure in acc_line for figure in expected), acc_line
    # execution.results() nests the comparison: the same table.
    assert summary_text({**results, "comparison": comparison}) == text


def test_histogram_bins_group_many_values_in_twenty_bins() -> None:
    from collections import Counter

    counts = Counter({i / 100: 1 for i in range(101)})
    edges, binned = histogram_bins(counts)
    assert len(edges) == 21 and sum(binned) == 101 and edges[0] == 0.0 and edges[-1] == 1.0


def test_report_step_writes_report_html_with_step_times(tmp_path: Path) -> None:
    evaluator = CustomScorerEvaluator(
        evaluator="rouge", dataset=str(EXAMPLES / "truthfulqa_answers.jsonl"), model="listed-answers",
        s3_output_path=str(tmp_path / "out"),
    )  # fmt: skip
    execution = evaluator.evaluate()
    execution.wait(poll=1)
    page = Path(execution.s3_output_path, "report.html").read_text()
    results = execution.results()
    rows = {r.attrs["data-metric"]: r for r in body_rows(parse(page).tables["headline-table"])}
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert rows[name].cells[1].value == results["metrics"][name]
    steps = [r.cells[0].text for r in body_rows(parse(page).tables["steps"])]
    assert steps == ["EvaluateModel", "Report"]
    assert not list(Path(execution.s3_output_path).glob("*.tmp*"))


def test_mlflow_gets_report_html_and_subtask_metrics_at_the_model_version(comparison_output: str) -> None:
    results = read_json(comparison_output, "results.json")
    Path(storage.local_path(storage.join(comparison_output, "report.html"))).write_text(_page(comparison_output))
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/my-models/7"
    spec = EvaluationSpec(
        eval_type="benchmark", model=package, benchmark="MMLU", mlflow=MlflowSpec(experiment_name="history")
    )
    known = {f.name for f in EvaluationResult.__dataclass_fields__.values()}
    tracked = log_to_mlflow(spec, Report(EvaluationResult(**{k: v for k, v in results.items() if k in known})),
                            comparison_output)  # fmt: skip
    client = MlflowClient(tracked.tracking_uri)
    for subject in SUBJECTS:
        (point,) = client.get_metric_history(tracked.run_id, f"subtask/{subject}/acc")
        assert (point.step, point.value) == (7, results["subtasks"][subject]["acc"])
    artifacts = {a.path for a in client.list_artifacts(tracked.run_id)}
    assert "report.html" in artifacts
