"""``evalstack view`` over real executions: the list and its filters, reports, sample lines, compare and
history pages, and nothing but GET/HEAD. Local backend (real pipeline runs), and SageMaker (moto in
server mode, results read from S3)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from evalstack import storage
from evalstack.evaluate import CustomScorerEvaluator, EvaluationPipelineExecution
from evalstack.view import pages
from evalstack.view.executions import ExecutionView, read_files
from evalstack.view.server import ViewServer, backend_executions
from tests.conftest import EXAMPLES
from tests.support.html_tables import body_rows, parse
from tests.support.report_data import synthesize_mmlu_comparison
from tests.test_runtime_sagemaker import deployed  # noqa: F401 - the fixture, shared

DATASET = EXAMPLES / "truthfulqa_answers.jsonl"
GROUP = "support-bot"


def _run(name: str, dataset: Path, output: Path) -> EvaluationPipelineExecution:
    execution = CustomScorerEvaluator(
        evaluator="rouge", dataset=str(dataset), model="listed-answers", s3_output_path=str(output),
        base_eval_name=name, model_package_group=GROUP,
    ).evaluate()  # fmt: skip
    execution.wait(poll=1)
    return execution


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[EvaluationPipelineExecution]]]:
    """Two finished custom-scorer executions (same metrics, different answers) in one EVALSTACK_HOME."""
    root = tmp_path_factory.mktemp("view")
    worse = root / "worse.jsonl"
    rows = [json.loads(line) for line in DATASET.read_text().splitlines()]
    worse.write_text("".join(json.dumps({**r, "response": r["prompt"]}) + "\n" for r in rows))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALSTACK_HOME", str(root / "home"))
        runs = [_run("first", DATASET, root / "out"), _run("second", worse, root / "out")]
    yield root / "home", runs


@pytest.fixture
def viewer(local_runs, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[httpx.Client, list]]:
    home, runs = local_runs
    monkeypatch.setenv("EVALSTACK_HOME", str(home))
    server = ViewServer(backend_executions()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client, runs
    finally:
        server.stop()


def _id(execution: EvaluationPipelineExecution) -> str:
    return execution.arn.rsplit("/", 1)[-1]


def _listed(client: httpx.Client, **params: str) -> list[str]:
    response = client.get("/", params=params)
    assert response.status_code == 200
    tables = parse(response.text).tables
    return [r.attrs["data-execution"] for r in body_rows(tables["executions"])] if "executions" in tables else []


def test_list_and_filters(viewer) -> None:
    client, (first, second) = viewer
    assert _listed(client) == [_id(second), _id(first)]  # newest first
    assert _listed(client, type="custom_scorer") == [_id(second), _id(first)]
    assert _listed(client, type="benchmark") == []
    assert _listed(client, status="Succeeded", model="listed") == [_id(second), _id(first)]
    assert _listed(client, status="Failed") == []
    assert _listed(client, model="no-such-model") == []


def test_report_page_shows_the_execution_numbers_and_links_sample_lines(viewer) -> None:
    client, (first, _) = viewer
    results = first.results()
    response = client.get(f"/executions/{quote(_id(first), safe='')}/report")
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    tables = parse(response.text).tables
    rows = {r.attrs["data-metric"]: r for r in body_rows(tables["headline-table"])}
    assert {name: rows[name].cells[1].value for name in ("rouge1", "rougeL")} == {
        name: results["metrics"][name] for name in ("rouge1", "rougeL")
    }
    steps = [r.cells[0].text for r in body_rows(tables["steps"])]
    assert steps[0] == "EvaluateModel" and steps[-1].startswith("Report"), steps
    line = next(a["data-line"] for a in parse(response.text).links if a.get("data-line"))
    samples = client.get(f"/executions/{_id(first)}/samples.jsonl")
    row = next(r for r in parse(samples.text).tables["samples"] if r.attrs.get("id") == f"L{line}")
    on_disk = Path(first.s3_output_path, "samples.jsonl").read_text().splitlines()[int(line) - 1]
    assert json.loads(row.cells[1].text) == json.loads(on_disk)
    stored = client.get(f"/executions/{_id(first)}/report.html")
    assert stored.status_code == 200 and stored.text == Path(first.s3_output_path, "report.html").read_text()


def test_compare_page_reads_deltas_from_both_results(viewer) -> None:
    client, (first, second) = viewer
    response = client.get("/compare", params=[("id", _id(first)), ("id", _id(second))])
    assert response.status_code == 200
    ours, theirs = first.results()["metrics"], second.results()["metrics"]
    rows = {r.attrs["data-metric"]: r for r in body_rows(parse(response.text).tables["compare-metrics"])}
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        _, a, b, delta = rows[name].cells
        assert (a.value, b.value, delta.value) == (ours[name], theirs[name], theirs[name] - ours[name])
        assert delta.text == f"{theirs[name] - ours[name]:+.4f}"
    assert any(rows[n].cells[3].value != 0 for n in rows)


def test_compare_takes_two_to_five_executions(viewer) -> None:
    client, (first, _) = viewer
    one = client.get("/compare", params={"id": _id(first)})
    assert one.status_code == 400 and "choose 2 to 5 executions, got 1" in one.text
    twice = client.get("/compare", params=[("id", _id(first)), ("id", _id(first))])
    assert twice.status_code == 400 and "chosen twice" in twice.text
    missing = client.get("/compare", params=[("id", _id(first)), ("id", "nope")])
    assert missing.status_code == 404 and "no execution &#x27;nope&#x27;" in missing.text


def test_history_of_a_model_package_group(viewer) -> None:
    client, (first, second) = viewer
    response = client.get("/history", params={"group": GROUP})
    assert response.status_code == 200
    rows = body_rows(parse(response.text).tables["history-table"])
    assert [r.attrs["data-execution"] for r in rows] == [_id(first), _id(second)]  # oldest first
    primary = first.results()["details"]["primary_metric"]
    assert parse(response.text).tables["history-table"][0].cells[3].text == primary
    assert [r.cells[3].value for r in rows] == [e.results()["metrics"][primary] for e in (first, second)]
    assert [r.cells[4].text for r in rows] == ["no gate", "no gate"]
    assert response.text.count('id="history-line') == 1
    assert "no finished evaluation" in client.get("/history", params={"group": "other"}).text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_write_methods_are_refused(viewer, method: str) -> None:
    client, (first, _) = viewer
    before = sorted(p.name for p in Path(first.s3_output_path).iterdir())
    response = client.request(method, f"/executions/{_id(first)}/report", content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert sorted(p.name for p in Path(first.s3_output_path).iterdir()) == before
    assert client.head("/").status_code == 200


def test_foreign_host_and_unknown_pages(viewer) -> None:
    client, _ = viewer
    assert client.get("/", headers={"Host": "attacker.example:80"}).status_code == 403
    assert client.get("/executions/nope/report").status_code == 404
    assert client.get("/nothing-here").status_code == 404
    assert client.get("/history").status_code == 400


def test_evalstack_view_prints_its_address(local_runs, monkeypatch: pytest.MonkeyPatch) -> None:
    home, (first, _) = local_runs
    monkeypatch.setenv("EVALSTACK_HOME", str(home))
    process = subprocess.Popen([sys.executable, "-m", "evalstack.cli.main", "view"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("evalstack view: serving http://127.0.0.1:"), line
        url = line.split()[3]
        assert _id(first) in httpx.get(url, timeout=30).text
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_compare_page_has_per_subtask_deltas(tmp_path: Path) -> None:
    views = []
    for seed in (1, 2, 3):
        output = str(tmp_path / f"run{seed}")
        synthesize_mmlu_comparison(output, {s: 12 for s in ("anatomy", "virology", "marketing")}, seed=seed)
        execution = EvaluationPipelineExecution(
            name=f"run{seed}", arn=f"arn:aws:sagemaker:us-east-1:000000000000:pipeline/p/execution/e{seed}",
            status="Succeeded", eval_type="benchmark", s3_output_path=output, creation_time=datetime.now(UTC),
        )  # fmt: skip
        views.append(ExecutionView(execution, read_files(output)))
    page = pages.compare_page(views)
    rows = body_rows(parse(page).tables["compare-subtasks"])
    assert [r.attrs["data-subtask"] for r in rows] == ["anatomy", "marketing", "virology"]
    for row in rows:
        a, b, c = (v.files.results["subtasks"][row.attrs["data-subtask"]]["acc"] for v in views)
        assert [cell.value for cell in row.cells[1:]] == [a, b, b - a, c, c - a]

    # The plots draw the same numbers: grouped bars per metric, one per execution, and per execution
    # after the first its per-subtask differences from the first, largest first.
    metrics = sorted(views[0].files.results["metrics"])
    drawn = {(int(m), int(e)): float(v) for m, e, v in re.findall(r'<g id="compare-metrics-plot-(\d+)-(\d+)" '
                                                                   r'data-value="([^"]+)">', page)}  # fmt: skip
    assert drawn == {(m, e): v.files.results["metrics"][name] for m, name in enumerate(metrics)
                     for e, v in enumerate(views)}  # fmt: skip
    for i, view in enumerate(views[1:], start=1):
        bars = re.findall(rf'<g id="compare-delta-{i}-diff-(\d+)" data-value="([^"]+)"><title>([^:<]+):', page)
        assert [int(index) for index, _, _ in bars] == [0, 1, 2]
        expected = sorted(
            ((view.files.results["subtasks"][s]["acc"] - views[0].files.results["subtasks"][s]["acc"], s)
             for s in ("anatomy", "marketing", "virology")), key=lambda d: (-d[0], d[1]),
        )  # fmt: skip
        assert [(float(value), subtask) for _, value, subtask in bars] == expected


def test_sagemaker_backend_reads_results_from_s3(deployed: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    execution = CustomScorerEvaluator(
        evaluator="rouge", dataset=str(DATASET), model="m", region="us-east-1", base_eval_name="sm-view"
    ).evaluate()
    assert execution.s3_output_path.startswith(f"s3://{deployed['bucket']}/")
    # moto does not run pipelines: the Report step's files are put where it would write them.
    synthesize_mmlu_comparison(execution.s3_output_path, {"anatomy": 10, "virology": 10}, seed=5)
    storage.write_text(storage.join(execution.s3_output_path, "report.html"), "<p>stored report</p>")
    assert not storage.uses_local_files(execution.s3_output_path)
    server = ViewServer(backend_executions(region="us-east-1")).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert _listed(client) == [_id(execution)]
            report = client.get(f"/executions/{_id(execution)}/report")
            assert report.status_code == 200, report.text
            rows = body_rows(parse(report.text).tables["subtask-table-acc"])
            assert {r.attrs["data-subtask"] for r in rows} == {"anatomy", "virology"}
            assert client.get(f"/executions/{_id(execution)}/report.html").text == "<p>stored report</p>"
    finally:
        server.stop()


def test_sagemaker_history_shows_each_package_version_and_its_approval(deployed: dict[str, str]) -> None:  # noqa: F811
    import boto3

    sagemaker = boto3.client("sagemaker")
    group = f"models-{deployed['stage']}"
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    decisions = {1: ("Rejected", "accuracy 0.41 < 0.5"), 2: ("Approved", "accuracy 0.62 >= 0.5")}
    executions = []
    for version, (status, reason) in decisions.items():
        arn = sagemaker.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1"}],
                                    "SupportedContentTypes": ["application/json"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
        )["ModelPackageArn"]  # fmt: skip
        assert arn.endswith(f"/{version}")
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=reason)
        execution = CustomScorerEvaluator(
            evaluator="rouge", dataset=str(DATASET), model="m", region="us-east-1", base_eval_name=f"v{version}"
        ).evaluate()
        synthesize_mmlu_comparison(execution.s3_output_path, {"anatomy": 10, "virology": 10}, seed=version)
        # The spec the trigger Lambda writes for a package: the model is the package version's ARN.
        spec = json.loads(storage.read_text(storage.join(execution.s3_output_path, "spec.json")))
        storage.write_text(storage.join(execution.s3_output_path, "spec.json"), json.dumps({**spec, "model": arn}),
                           replace=True)  # S3 outputs are write-once; this test stands in for the trigger's spec
        executions.append(execution)
    server = ViewServer(backend_executions(region="us-east-1")).start()
    try:
        response = httpx.get(f"{server.url}history", params={"group": group}, timeout=30)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    rows = body_rows(parse(response.text).tables["history-table"])
    assert [r.cells[0].text for r in rows] == ["1", "2"]
    assert [r.cells[4].text for r in rows] == [f"{s}: {why}" for s, why in decisions.values()]
    assert [r.cells[3].value for r in rows] == [e.results()["metrics"]["acc"] for e in executions]
