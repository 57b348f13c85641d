"""A runner started before its execution exists (evalstack.pipeline.local.standby): the local client hands
its next execution to it when it would run as a runner started then would, starts its own otherwise, and a
standby runner that gets no execution stops its warm parent, exits and leaves no file behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from evalstack import storage
from evalstack.pipeline.local import LocalSageMakerClient, standby, warm

ROLE_ARN = "arn:aws:iam::000000000000:role/evalstack-local"
# The step writes its parent's command line (the runner's, for a step that is not our entry point).
PARENT = "import pathlib, sys; p = pathlib.Path('/proc/%d/cmdline' % __import__('os').getppid()); " \
         "pathlib.Path(sys.argv[1]).write_bytes(p.read_bytes().replace(bytes(1), b' '))"  # fmt: skip


def _run_one_step(client: LocalSageMakerClient, out: Path) -> str:
    """Start and finish a one-step execution; the runner's command line, as its step saw it."""
    step = {
        "Name": "Parent",
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
            },
            "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", "-c", PARENT, str(out)]},
            "RoleArn": ROLE_ARN,
        },
    }
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [step]}
    client.create_pipeline(PipelineName="parent", PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    arn = client.start_pipeline_execution(PipelineName="parent")["PipelineExecutionArn"]
    deadline = time.monotonic() + 120
    while (status := client.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]) in (
        "Executing",
        "Stopping",
    ):
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.1)
    assert status == "Succeeded", client.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert (client.store.execution_dir(arn) / "runner.log").is_file()
    return out.read_text()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""  # it ended


def _pids(containing: str) -> list[int]:
    """Live processes whose command line contains ``containing``."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if containing in _command(pid) and _alive(pid)]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def cold_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # These runners run no step of ours: no warm parent to start.
    monkeypatch.setenv(warm.WARM_ENV, "0")


def _group(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, ProcessLookupError):
        return None  # it ended


def _standby_runner(home: Path) -> int:
    """The pid of the standby runner waiting for ``home`` (started by standby.start), once it has
    detached: the first process of that command line leads its own group only after it forked."""

    def detached() -> list[int]:
        return [pid for pid in _pids(f"--standby {home}") if _group(pid) == pid]

    _wait_for(lambda: len(detached()) == 1, "the standby runner did not start")
    return detached()[0]


@pytest.mark.usefixtures("cold_steps")
def test_the_next_execution_runs_in_the_standby_runner(tmp_path: Path) -> None:
    home = storage.evalstack_home()
    standby.start(home)
    runner = _standby_runner(home)
    client = LocalSageMakerClient()
    command = _run_one_step(client, tmp_path / "parent.txt")
    assert "--standby" in command and str(home) in command
    assert not (home / "standby").exists()  # its log became the execution's runner.log
    _wait_for(lambda: not _alive(runner), "the runner did not exit after its execution")


@pytest.mark.usefixtures("cold_steps")
def test_a_standby_runner_is_not_used_under_another_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = storage.evalstack_home()
    standby.start(home)
    runner = _standby_runner(home)
    monkeypatch.setenv("EVALSTACK_TEST_SETTING", "changed after the runner started")
    command = _run_one_step(LocalSageMakerClient(), tmp_path / "parent.txt")
    assert "--standby" not in command and command.split()[-1].startswith("arn:aws:sagemaker:")
    _wait_for(lambda: not _alive(runner), "the unused standby runner did not exit")
    assert not (home / "standby").exists()


@pytest.mark.usefixtures("cold_steps")
def test_a_standby_runner_that_died_is_replaced(tmp_path: Path) -> None:
    home = storage.evalstack_home()
    standby.start(home)
    runner = _standby_runner(home)
    os.kill(runner, signal.SIGKILL)
    _wait_for(lambda: not _alive(runner), "the standby runner was not killed")
    command = _run_one_step(LocalSageMakerClient(), tmp_path / "parent.txt")
    assert "--standby" not in command


def test_a_standby_runner_without_an_execution_stops_its_warm_parent_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    standby.start(home)
    runner = _standby_runner(home)
    # Its only child until it runs an execution: the warm parent it forked (with the runner's command line).
    _wait_for(lambda: len(_children(runner)) == 1, "the standby runner did not start its warm parent")
    (parent,) = _children(runner)
    standby.discard()
    assert not home.exists()  # the folders made for its log are gone with it
    _wait_for(lambda: not _alive(runner) and not _alive(parent), "the runner or its warm parent lives on")

