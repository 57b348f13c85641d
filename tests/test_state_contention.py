"""The local backend's state under contention: another process holding the SQLite lock, a runner
that loses its database mid-run, a relative EVALSTACK_HOME, and corrupt state files.

Timings are scaled down through the environment (busy timeout, retries, heartbeat timeout) so a
lock held for seconds stands in for one held for minutes with the defaults."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalstack import storage
from evalstack.cli.main import EXIT_FAILED
from evalstack.evaluate import CustomScorerEvaluator
from evalstack.models.cache import cache_info
from evalstack.pipeline.local import LocalSageMakerClient
from evalstack.pipeline.local.client import _pid_alive
from evalstack.pipeline.local.store import Store
from tests.conftest import REPO_ROOT, TRUTHFULQA_QUESTIONS, scripted_answers
from tests.support.local_steps import ROLE_ARN, python_step
from tests.support.openai_server import serve

LOCK_SECONDS = 8.0

# Holds an exclusive write lock on the database given as argv[1]; prints "locked" once it has it and
# releases it after argv[2] seconds, or when a line arrives on stdin if argv[2] is "stdin".
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
db.execute("UPDATE executions SET modified = modified")
print("locked", flush=True)
if sys.argv[2] == "stdin":
    sys.stdin.readline()
else:
    time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
print("released", flush=True)
"""


def _lock(database: Path, hold: str) -> subprocess.Popen[str]:
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database), hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None
    assert locker.stdout.readline().strip() == "locked"
    return locker


def _wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def slow_candidate(questions: list[dict[str, str]]) -> Iterator:
    """The candidate answers each question after 0.4 s: 12 questions one at a time outlast nothing
    but keep EvaluateModel busy while the lock is taken."""
    with serve(scripted_answers(questions, candidate_delay=0.4)) as server:
        yield server


def test_a_held_lock_does_not_fail_a_healthy_run(
    slow_candidate, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock (8 s) outlasts the busy timeout (1 s) and the heartbeat timeout (3 s) many times over.
    monkeypatch.setenv("EVALSTACK_DB_BUSY_TIMEOUT", "1")
    monkeypatch.setenv("EVALSTACK_HEARTBEAT_TIMEOUT", "3")
    monkeypatch.setenv("EVALSTACK_DB_RETRIES", "12")
    evaluator = CustomScorerEvaluator(
        evaluator="accuracy",
        dataset=dataset,
        model=f"openai:{slow_candidate.base_url}?model=candidate&api=chat",
        s3_output_path=str(tmp_path / "out"),
    )
    evaluator.hyperparameters.max_concurrency = 1
    execution = evaluator.evaluate()
    store = Store()
    _wait_until(
        lambda: any(s.name == "EvaluateModel" and s.status == "Executing" for s in execution.steps()),
        "EvaluateModel to start",
    )
    locker = _lock(store.path, str(LOCK_SECONDS))
    beat_before = store.last_beat(execution.arn)
    assert beat_before is not None
    statuses = set()
    while locker.poll() is None:
        execution.refresh()  # the client's dead-runner check runs on every describe
        statuses.add(execution.status)
        time.sleep(0.5)
    assert locker.returncode == 0
    assert statuses == {"Executing"}  # never Failed while the runner lived
    # The heartbeat went on while the database was locked.
    assert (store.last_beat(execution.arn) or 0) > beat_before + LOCK_SECONDS / 2

    execution.wait(poll=0.5, timeout=180)
    assert execution.status == "Succeeded", execution.failure_reason
    assert execution.results()["metrics"]["accuracy"] == 1.0
    assert {s.name: s.status for s in execution.steps()}["EvaluateModel"] == "Completed"


def _gate_step(go: Path) -> dict:
    """A Processing step that waits for the file ``go`` to exist, then succeeds."""
    code = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
    return python_step("Work", code)


@pytest.mark.parametrize("outcome_file", [True, False], ids=["outcome-file", "records-only"])
def test_a_completed_run_whose_database_writes_were_lost_reads_succeeded(
    outcome_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock outlasts every retry of the runner, so neither the step's end nor the execution's
    end reach SQLite and the runner exits. The completion record and the outcome file it wrote
    first settle the execution as Succeeded once the lock clears; it is never marked Failed.
    Without the outcome file (a runner killed just before writing it), the completion records of
    every step settle it the same way."""
    monkeypatch.setenv("EVALSTACK_DB_BUSY_TIMEOUT", "0.5")
    monkeypatch.setenv("EVALSTACK_DB_RETRIES", "1")
    go = tmp_path / "go"
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [_gate_step(go)]}
    client = LocalSageMakerClient()
    client.create_pipeline(PipelineName="gated", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arn = client.start_pipeline_execution(PipelineName="gated")["PipelineExecutionArn"]
    _wait_until(lambda: any(s["pids"] != "[]" for s in client.store.steps(arn)), "the step to start")
    runner_pid = client.store.execution(arn)["runner_pid"]

    locker = _lock(client.store.path, "stdin")
    go.touch()
    _wait_until(lambda: not _pid_alive(runner_pid), "the runner to give up on the locked database", timeout=60)
    assert "Work" in client.store.step_records(arn)
    assert client.store.outcome(arn) == {"status": "Succeeded", "failure_reason": None}
    assert client.store.execution(arn)["status"] == "Executing"  # the database never heard
    log = (client.store.execution_dir(arn) / "runner.log").read_text()
    assert "recorded in its completion record only" in log
    if not outcome_file:
        (client.store.execution_dir(arn) / "outcome.json").unlink()

    assert locker.stdin is not None
    locker.stdin.write("release\n")
    locker.stdin.flush()
    assert locker.wait(timeout=30) == 0
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionStatus"] == "Succeeded"
    assert "FailureReason" not in described
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [(s["StepName"], s["StepStatus"]) for s in steps] == [("Work", "Succeeded")]


def test_relative_evalstack_home_end_to_end(
    model_server, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = f"rel-home-{tmp_path.name}"  # pinned per process: a name no other test uses
    monkeypatch.setenv("EVALSTACK_HOME", relative)
    home = tmp_path / relative
    execution = CustomScorerEvaluator(
        evaluator="accuracy", dataset=dataset, model=f"openai:{model_server.base_url}?model=candidate&api=chat"
    ).evaluate()
    execution.wait(poll=0.5, timeout=180)
    assert execution.status == "Succeeded", execution.failure_reason
    assert execution.s3_output_path.startswith(str(home / "results"))
    assert execution.results()["metrics"]["accuracy"] == 1.0
    # State and cache live in the home, not in a step's scratch folder.
    assert (home / "pipelines.sqlite").is_file()
    info = cache_info(home / "cache" / "responses.sqlite")
    assert info.exists and info.entries == TRUTHFULQA_QUESTIONS
    assert list((home / "executions").rglob("responses.sqlite")) == []
    assert list((home / "executions").rglob("pipelines.sqlite")) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalstack.cli.main", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_corrupt_state_database_is_named_with_the_way_out(isolated_environment: Path) -> None:
    isolated_environment.mkdir(parents=True)
    database = isolated_environment / "pipelines.sqlite"
    database.write_bytes(b"this is not a database\n" * 200)
    expected = (
        f"state database {database} is corrupt (file is not a database); move it aside or delete it to start fresh"
    )
    with pytest.raises(storage.CorruptDatabaseError) as err:
        LocalSageMakerClient()
    assert str(err.value).startswith(expected)
    done = _cli("executions", "list")
    assert done.returncode == EXIT_FAILED  # a corrupt file is not a usage error nor a missing execution
    assert done.stderr.startswith(f"evalstack: error: {expected}")
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "Traceback" not in done.stderr

    database.rename(isolated_environment / "pipelines.sqlite.bad")
    assert "no executions" in _cli("executions", "list").stdout  # the way out works


def test_busy_timeout_and_retries_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTACK_DB_BUSY_TIMEOUT", "0.2")
    monkeypatch.setenv("EVALSTACK_DB_RETRIES", "2")
    store = Store()
    locker = _lock(store.path, "stdin")
    try:
        with pytest.raises(RuntimeError, match=r"stayed locked by another process through 2 attempt\(s\) of 0\.2 s"):
            store.update_execution("arn:none", modified=0)
    finally:
        assert locker.stdin is not None
        locker.stdin.write("release\n")
        locker.stdin.flush()
        assert locker.wait(timeout=30) == 0
    store.update_execution("arn:none", modified=0)  # free again: the same call goes through
    monkeypatch.setenv("EVALSTACK_DB_BUSY_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="EVALSTACK_DB_BUSY_TIMEOUT: must be a positive number, got 'soon'"):
        Store()
