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
from evalstack.benchmarks.task import BenchmarkTask
from evalstack.engine.run import Report, evaluate_in_process, report, run_shard
from evalstack.evaluate import CustomScorerEvaluator
from evalstack.results.html_report import (
    LISTED,
    digest_samples,
    histogram_bins,
    load_inputs,
    render_html,
    slowest_note,
)
from evalstack.results.sample_timings import ShardTimer, digest_timings, merge_sample_timings, shard_uri
from evalstack.results.summary import fmt, fmt_p, summary_html, summary_text
from evalstack.results.tracking import log_to_mlflow
from evalstack.results.writer import EvaluationResult
from evalstack.spec import DatasetSpec, EvaluationSpec, MlflowSpec
from tests.conftest import EXAMPLES
from tests.support.html_tables import body_rows, parse
from tests.support.openai_server import Reply, chat_body, prompt_of, serve
from tests.support.report_data import read_json, synthesize_mmlu_comparison
from tests.support.scripted_benchmarks import backend as scripted_backend
from tests.support.scripted_benchmarks import benchmark_spec, echo_reply

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
    results, base = read_json(comparison_output, "results.json"), read_json(comparison_output, "base/results.json")
    order = sorted(SUBJECTS, key=lambda s: (-results["subtasks"][s]["acc"], s))
    expected = {
        "bar": [results["subtasks"][s]["acc"] for s in order],
        "base": [base["subtasks"][s]["acc"] for s in order],
        "diff": sorted((results["subtasks"][s]["acc"] - base["subtasks"][s]["acc"] for s in order), reverse=True),
    }
    for series in ("bar", "base", "diff"):
        plot = "difference-acc" if series == "diff" else "subtasks-acc"
        ids = re.findall(rf'<g id="{plot}-{series}-(\d+)"', page)
        assert sorted(map(int, ids)) == list(range(len(SUBJECTS))), series
        # Each bar carries the number it draws.
        drawn = re.findall(rf'<g id="{plot}-{series}-\d+" data-value="([^"]+)"', page)
        assert [float(v) for v in drawn] == expected[series], series
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
    assert digest.slowest == [] and digest.samples == 3 and digest.timings is None


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
    # Every answer was in the dataset: the side file is there, empty, and the report says why no list.
    assert Path(execution.s3_output_path, "sample_timings.jsonl").read_text() == ""
    assert "slowest" not in parse(page).tables
    assert "every answer came from the dataset: no model was called" in page
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


SLOW = {3: 0.3, 7: 0.4}  # item index -> seconds the server waits before answering


def _timings(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "sample_timings.jsonl").read_text().splitlines()]


def test_slowest_samples_are_their_requests_model_time_beside_byte_identical_samples(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i}", "reference": f"answer {i}"} for i in range(14)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def answer(path: str, body: dict) -> Reply:
        index = int(prompt_of(path, body).split()[-1])
        return Reply(chat_body(f"answer {index}" if index % 3 else "something else"), delay=SLOW.get(index, 0.0))

    with serve(answer) as server:
        spec = EvaluationSpec(
            eval_type="custom_scorer", model=f"openai:{server.base_url}?model=m&api=chat",
            dataset=DatasetSpec(str(tmp_path / "qa.jsonl")), metrics=["rouge"],
        )  # fmt: skip
        evaluate_in_process(spec, str(tmp_path / "first"))
        assert len(server.requests) == len(rows)
        # Again, from the response cache, and in two shards: the same samples.jsonl, byte for byte.
        evaluate_in_process(spec, str(tmp_path / "again"))
        for index in range(2):
            run_shard(spec, "candidate", index, 2, str(tmp_path / "records"))
        report(spec, str(tmp_path / "sharded"), records_uri=str(tmp_path / "records"))
        assert len(server.requests) == len(rows)

    samples = (tmp_path / "first" / "samples.jsonl").read_text()
    ids = [json.loads(line)["id"] for line in samples.splitlines()]
    timed = _timings(tmp_path / "first")
    assert [(t["id"], t["line"], t["requests"], t["cached"]) for t in timed] == [
        (sample_id, line, 1, 0) for line, sample_id in enumerate(ids, start=1)
    ]
    for index, wait in SLOW.items():
        assert timed[index]["seconds"] >= wait  # the server slept that long before answering
    for output in ("again", "sharded"):
        assert (tmp_path / output / "samples.jsonl").read_text() == samples
        assert [(t["id"], t["line"], t["cached"], t["seconds"]) for t in _timings(tmp_path / output)] == [
            (t["id"], t["line"], 1, 0.0) for t in timed
        ]

    page = render_html(load_inputs(str(tmp_path / "first")))
    shown = body_rows(parse(page).tables["slowest"])
    expected = sorted(timed, key=lambda t: (-t["seconds"], t["line"]))[:LISTED]
    assert [(r.cells[0].text, r.cells[1].text, r.cells[4].value, r.cells[5].value) for r in shown] == [
        (f"samples.jsonl:{t['line']}", t["id"], t["seconds"], 1) for t in expected
    ]
    assert [r.cells[4].text for r in shown] == [f"{t['seconds']:.3f}" for t in expected]
    assert f"{len(rows)} samples answered by the model (0 wholly from the response cache)" in page
    again = render_html(load_inputs(str(tmp_path / "again")))
    assert f"every answer of the {len(rows)} samples came from the response cache" in again


def test_timings_of_another_run_are_refused(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "samples.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    row = {"index": 1, "id": "c", "requests": 1, "cached": 0, "seconds": 0.5}
    storage.write_text(shard_uri(str(tmp_path / "records"), "candidate", 0, 1), json.dumps(row) + "\n")
    with pytest.raises(RuntimeError, match=r"samples.jsonl: line 2 is not sample 'c'"):
        merge_sample_timings(str(tmp_path / "records"), "candidate", str(output))
    assert not (output / "sample_timings.jsonl").exists()


def test_a_multiple_choice_sample_is_timed_over_its_choices_and_its_record_is_unchanged(tmp_path: Path) -> None:
    def script(path: str, body: dict) -> Reply:
        prompt = body["prompt"]
        reply = echo_reply(prompt, f" {prompt[-1]}", -0.5 if prompt[-1] == "A" else -2.0)
        reply.delay = 0.05
        return reply

    task = BenchmarkTask(benchmark_spec("MMLU", ["anatomy"], limit=5), "candidate")
    items = task.items()
    timer = ShardTimer(0, 1)
    with serve(script) as server:
        plain = task.run(items, scripted_backend(server.base_url, logprobs="echo"))
        timed = task.run(items, timer.wrap(scripted_backend(server.base_url, logprobs="echo")))
    assert [json.dumps(r, sort_keys=True) for r in timed] == [json.dumps(r, sort_keys=True) for r in plain]
    timer.add(timed)
    timer.write(str(tmp_path), "candidate")
    rows = [json.loads(line) for line in Path(shard_uri(str(tmp_path), "candidate", 0, 1)).read_text().splitlines()]
    assert [(r["index"], r["id"], r["requests"], r["cached"]) for r in rows] == [
        (i, item.id, 4, 0) for i, item in enumerate(items)
    ]
    # A question's four choices share its context, so the backend may ask them in one list-prompt request
    # and split its time between them: each question took at least one of the server's waits.
    assert all(r["seconds"] >= 0.05 for r in rows), rows


def test_slowest_note_says_why_there_is_no_list() -> None:
    def note(rows: list[dict] | None) -> str:
        timings = None if rows is None else digest_timings([json.dumps(r) for r in rows], LISTED)
        return slowest_note(timings)

    row = {"id": "a", "line": 1, "requests": 2, "cached": 0, "seconds": None}
    assert "recorded no per-sample model time" in note(None)
    assert "every answer came from the dataset" in note([])
    assert "does not time single requests" in note([row])
    assert "came from the response cache" in note([{**row, "cached": 2, "seconds": 0.0}])
    timed = digest_timings(
        [json.dumps({**row, "id": i, "line": i + 1, "seconds": s}) for i, s in enumerate([0.5, 2.0, 0.5, None])], 2
    )
    assert (timed.answered, timed.measured) == (4, 3)
    assert [(s.line, s.seconds) for s in timed.slowest] == [(2, 2.0), (1, 0.5)]  # ties in file order


def test_names_in_plots_stay_text_even_with_dollar_signs() -> None:
    from evalstack.results import plots

    # "$...$" would be TeX to matplotlib: a subtask or execution name is shown as written, never parsed.
    def texts(svg: str) -> list[str]:  # drawn labels (tooltips are <title>, not <text>)
        return re.findall(r"<text [^>]*>([^<]*)</text>", svg)

    grouped = plots.metric_bars("m", ["cost $usd$"], ["run $1$", "run 2"], [[0.2, 0.5]])
    assert {"cost $usd$", "run $1$"} <= set(texts(grouped))
    assert "a $x^2$ b" in texts(plots.subtask_bars("s", "acc", [plots.SubtaskBar("a $x^2$ b", 0.5, 0.1)]))
