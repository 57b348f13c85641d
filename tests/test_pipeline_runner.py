"""The local runner's expression engine and graph walk, on small hand-made definitions."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evalstack.pipeline.local import LocalSageMakerClient
from evalstack.pipeline.local.expressions import Context, ExpressionError, parse_path, step_references
from tests.support.local_steps import ROLE_ARN, python_step


def _wait(client: LocalSageMakerClient, arn: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = client.describe_pipeline_execution(PipelineExecutionArn=arn)
        if desc["PipelineExecutionStatus"] in ("Succeeded", "Failed", "Stopped"):
            return desc
        time.sleep(0.2)
    raise TimeoutError(arn)


def test_paths_and_expressions() -> None:
    assert parse_path("Steps.Report.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri") == [
        "Steps",
        "Report",
        "ProcessingOutputConfig",
        "Outputs",
        "evaluation",
        "S3Output",
        "S3Uri",
    ]
    assert parse_path("metrics.scores[1].value") == ["metrics", "scores", 1, "value"]
    ctx = Context(
        parameters={"Out": "s3://b/p", "On": True, "N": 3},
        execution={"PipelineExecutionId": "abc"},
        steps={"Report": {"PropertyFiles": {"Eval": {"metrics": {"scores": [0.1, 0.9]}}}}},
    )
    join = {"Std:Join": {"On": "/", "Values": [{"Get": "Parameters.Out"}, {"Get": "Execution.PipelineExecutionId"}, 7]}}
    assert ctx.resolve(join) == "s3://b/p/abc/7"
    json_get = {
        "Std:JsonGet": {"PropertyFile": {"Get": "Steps.Report.PropertyFiles.Eval"}, "Path": "metrics.scores[1]"}
    }
    assert ctx.resolve(json_get) == 0.9
    assert ctx.condition({"Type": "GreaterThanOrEqualTo", "LeftValue": json_get, "RightValue": 0.9})
    assert not ctx.condition(
        {"Type": "Not", "Expression": {"Type": "Equals", "LeftValue": {"Get": "Parameters.On"}, "RightValue": True}}
    )
    assert ctx.condition({"Type": "Or", "Conditions": [
        {"Type": "LessThan", "LeftValue": {"Get": "Parameters.N"}, "RightValue": 1},
        {"Type": "In", "QueryValue": {"Get": "Parameters.N"}, "Values": [1, 3]},
    ]})  # fmt: skip
    assert step_references({"a": [json_get, {"Get": "Parameters.Out"}]}) == {"Report"}
    with pytest.raises(ExpressionError, match="unknown parameter"):
        ctx.resolve({"Get": "Parameters.Missing"})
    with pytest.raises(ExpressionError, match="has not run"):
        ctx.resolve({"Get": "Steps.Other.Outcome"})
    with pytest.raises(ExpressionError, match=r"metrics.absent: no 'absent'"):
        ctx.resolve(
            {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Report.PropertyFiles.Eval"}, "Path": "metrics.absent"}}
        )


def _record_step(name: str, log: Path, depends_on: list[str] | None = None) -> dict:
    """A Processing step that appends '<name> start' and '<name> end' lines around a short sleep."""
    code = (
        f"import time; f = open({str(log)!r}, 'a'); f.write('{name} start\\n'); f.flush(); "
        f"time.sleep(0.3); f.write('{name} end\\n'); f.close()"
    )
    return python_step(name, code, depends_on)


def test_parallel_bound_and_depends_on(tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    definition = {
        "Version": "2020-12-01",
        "Parameters": [],
        "Steps": [_record_step("A", log), _record_step("B", log), _record_step("C", log, ["A", "B"])],
    }
    client = LocalSageMakerClient()
    client.create_pipeline(PipelineName="bound", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arn = client.start_pipeline_execution(
        PipelineName="bound", ParallelismConfiguration={"MaxParallelExecutionSteps": 1}
    )["PipelineExecutionArn"]
    assert _wait(client, arn)["PipelineExecutionStatus"] == "Succeeded"
    lines = log.read_text().splitlines()
    # One step at a time: every start is followed by its own end; C runs last.
    assert lines[0::2] in (["A start", "B start", "C start"], ["B start", "A start", "C start"])
    assert [line.replace("end", "start") for line in lines[1::2]] == lines[0::2]


def test_condition_on_parameters_and_fail_step_from_many_threads() -> None:
    definition = {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "Score", "Type": "Float", "DefaultValue": 0.5}],
        "Steps": [
            {
                "Name": "Check",
                "Type": "Condition",
                "Arguments": {
                    "Conditions": [
                        {"Type": "GreaterThan", "LeftValue": {"Get": "Parameters.Score"}, "RightValue": 0.7}
                    ],
                    "IfSteps": [],
                    "ElseSteps": [
                        {
                            "Name": "TooLow",
                            "Type": "Fail",
                            "Arguments": {
                                "ErrorMessage": {
                                    "Std:Join": {"On": " ", "Values": ["score", {"Get": "Parameters.Score"}]}
                                }
                            },
                        }
                    ],
                },
            }
        ],
    }
    client = LocalSageMakerClient()
    client.create_pipeline(PipelineName="gate", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    scores = ["0.9", "0.1", "0.75", "0.7"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        arns = list(
            pool.map(
                lambda s: client.start_pipeline_execution(
                    PipelineName="gate", PipelineParameters=[{"Name": "Score", "Value": s}]
                )["PipelineExecutionArn"],
                scores,
            )
        )
    outcomes = [_wait(client, arn) for arn in arns]
    assert [d["PipelineExecutionStatus"] for d in outcomes] == ["Succeeded", "Failed", "Succeeded", "Failed"]
    assert outcomes[1]["FailureReason"] == "score 0.1"
    assert len(client.list_pipeline_executions(PipelineName="gate")["PipelineExecutionSummaries"]) == 4
    # CreatedAfter in every form botocore accepts: aware and naive (UTC) datetimes, ISO strings, epoch seconds.
    past = datetime.now(UTC) - timedelta(hours=1)
    for after in (past, past.replace(tzinfo=None), past.isoformat(), past.timestamp()):
        listed = client.list_pipeline_executions(PipelineName="gate", CreatedAfter=after)
        assert len(listed["PipelineExecutionSummaries"]) == 4
    future = datetime.now(UTC) + timedelta(hours=1)
    assert client.list_pipeline_executions(PipelineName="gate", CreatedAfter=future)["PipelineExecutionSummaries"] == []


def test_a_failing_instance_stops_the_others(tmp_path: Path) -> None:
    """algo-2 fails at once while algo-1 would run for a minute: the step fails and algo-1 is
    terminated rather than left to finish (it never writes its end line)."""
    log = tmp_path / "instances.log"
    code = (
        "import json, os, sys, time\n"
        "root = os.environ['EVALSTACK_OPT_ML_ROOT']\n"
        "host = json.load(open(os.path.join(root, 'config', 'resourceconfig.json')))['current_host']\n"
        f"log = open({str(log)!r}, 'a')\n"
        "log.write(host + ' start\\n'); log.flush()\n"
        "if host == 'algo-2': sys.exit(3)\n"
        "time.sleep(60); log.write(host + ' end\\n')\n"
    )
    step = _record_step("Shards", log)
    step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 2
    step["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = ["python3", "-c", code]
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [step]}
    client = LocalSageMakerClient()
    client.create_pipeline(PipelineName="shards", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arn = client.start_pipeline_execution(PipelineName="shards")["PipelineExecutionArn"]
    described = _wait(client, arn, timeout=50)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert "algo-2 exited with code 3" in described["FailureReason"]
    assert "algo-1 end" not in log.read_text()


def _instances_step(code: str, count: int) -> dict:
    step = _record_step("Shards", Path("/dev/null"))
    step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = count
    step["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = ["python3", "-c", code]
    return step


def test_instances_queue_for_free_process_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five instances with room for two processes: every instance runs, never more than two at once."""
    monkeypatch.setenv("EVALSTACK_LOCAL_MAX_PROCESSES", "2")
    live = tmp_path / "live"
    live.mkdir()
    log = tmp_path / "instances.log"
    # Each instance marks itself live, notes how many are live, holds a moment, then unmarks itself.
    code = (
        "import json, os, time\n"
        "root = os.environ['EVALSTACK_OPT_ML_ROOT']\n"
        "host = json.load(open(os.path.join(root, 'config', 'resourceconfig.json')))['current_host']\n"
        f"live = {str(live)!r}\n"
        "open(os.path.join(live, host), 'w').close()\n"
        "count = len(os.listdir(live))\n"
        f"with open({str(log)!r}, 'a') as f: f.write(host + ' ' + str(count) + '\\n')\n"
        "time.sleep(0.5)\n"
        "os.remove(os.path.join(live, host))\n"
    )
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [_instances_step(code, 5)]}
    client = LocalSageMakerClient()
    client.create_pipeline(PipelineName="queued", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arn = client.start_pipeline_execution(PipelineName="queued")["PipelineExecutionArn"]
    assert _wait(client, arn)["PipelineExecutionStatus"] == "Succeeded"
    seen = dict(line.split() for line in log.read_text().splitlines())
    assert sorted(seen) == [f"algo-{i}" for i in range(1, 6)]
    assert max(int(n) for n in seen.values()) <= 2
    assert len(json.loads(client.store.steps(arn)[0]["pids"])) == 5


def test_instance_count_above_the_sagemaker_limit_fails_the_step(tmp_path: Path) -> None:
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [_instances_step("pass", 101)]}
    client = LocalSageMakerClient()
    client.create_pipeline(PipelineName="huge", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arn = client.start_pipeline_execution(PipelineName="huge")["PipelineExecutionArn"]
    described = _wait(client, arn)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert described["FailureReason"] == (
        "Step failure: Shards: InstanceCount must be between 1 and 100 (SageMaker's limit), got 101"
    )
    assert not (client.store.execution_dir(arn) / "Shards").exists()  # no instance folder was made
