"""The detached process that executes one pipeline execution's definition on this machine.

``python -m evalstack.pipeline.local --detach ARN`` forks away from the client (so the client
can exit; see the package's ``__main__``), records its pid and a heartbeat in SQLite, then walks
the step graph:

- a step is ready when every step it depends on (``DependsOn``, property references, and the
  Condition step whose branch holds it) has succeeded; it is never executed when one of those was
  not executed, which is how the untaken branch of a Condition and everything after it drop out;
- Condition steps evaluate their conditions; Fail steps fail the execution with their message;
- Processing steps run their container command as real subprocesses, one per instance, each with
  its own ``/opt/ml`` folder and ``resourceconfig.json``; outputs are then uploaded to their S3Uri
  (``s3://`` maps to the local object folder through :mod:`evalstack.storage`);
- instances whose command is our own step entry point are forked from a warm parent that imported
  the scientific stack once (:mod:`evalstack.pipeline.local.warm`), each still its own process;
- at most ``ParallelismConfiguration.MaxParallelExecutionSteps`` steps run at once, and at most
  ``EVALSTACK_LOCAL_MAX_PROCESSES`` (default: the number of CPUs) instance processes: the other
  instances of a big step wait for a free slot, so InstanceCount=100 queues rather than floods.

Steps that already succeeded (a retried execution) are kept with their properties, not redone.
Success is written first to the step's own completion record and the run's outcome file, then to
SQLite (see :mod:`evalstack.pipeline.local.store`): a database that stays locked, or a runner that
dies between the two, never turns a completed execution into a failed one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from evalstack import storage
from evalstack.catalog.limits import MAX_INSTANCE_COUNT
from evalstack.masking import mask
from evalstack.pipeline.definition import iter_steps
from evalstack.pipeline.local import warm
from evalstack.pipeline.local.expressions import Context, ExpressionError, step_references
from evalstack.pipeline.local.store import StateLockedError, Store, execution_id
from evalstack.pipeline.local.warm import StepProcess, WarmProcess

HEARTBEAT_ENV = "EVALSTACK_HEARTBEAT_SECONDS"
MAX_PROCESSES_ENV = "EVALSTACK_LOCAL_MAX_PROCESSES"
HEARTBEAT_SECONDS = 1.0
POLL_SECONDS = 0.2
# How often a step's instance processes are polled: the step ends (and the next one starts) within this
# of its last instance's exit, and a poll is a waitpid per instance, so checking often costs little.
INSTANCE_POLL_SECONDS = 0.02
STOP_GRACE_SECONDS = 5.0
DEFAULT_PARALLELISM = 50  # SageMaker's default MaxParallelExecutionSteps
LOG_TAIL_CHARS = 2000


class StepFailed(Exception):
    """A step ended in failure; the message becomes its FailureReason."""


class StepStopped(Exception):
    """The execution was stopped while the step ran."""


def max_processes() -> int:
    """How many step instance processes this machine runs at once."""
    return max(1, int(storage.env_number(MAX_PROCESSES_ENV, float(os.cpu_count() or 1))))


def kill_process_groups(pids: list[int], sig: int = signal.SIGTERM) -> None:
    """Signal each step instance's process group (each instance starts its own session)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class Runner:
    def __init__(self, store: Store, arn: str) -> None:
        self.store = store
        self.arn = arn
        self.exec_id = execution_id(arn)
        row = store.execution(arn)
        if row is None:
            raise ValueError(f"no execution {arn}")
        definition = json.loads(row["definition"])
        self.steps = {s["Name"]: s for s in iter_steps(definition["Steps"])}
        self.parallelism = int(row["parallelism"] or DEFAULT_PARALLELISM)
        pipeline_arn = arn.split("/execution/")[0]
        self.context = Context(
            parameters=json.loads(row["parameters"]),
            execution={
                "PipelineExecutionId": self.exec_id,
                "PipelineExecutionArn": arn,
                "PipelineName": row["pipeline_name"],
                "PipelineArn": pipeline_arn,
                "StartDateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["created"])),
            },
        )
        self.branch_of: dict[str, tuple[str, bool]] = {}  # step -> (condition step, runs when outcome is)
        for step in self.steps.values():
            if step["Type"] == "Condition":
                for child in step["Arguments"].get("IfSteps", []):
                    self.branch_of[child["Name"]] = (step["Name"], True)
                for child in step["Arguments"].get("ElseSteps", []):
                    self.branch_of[child["Name"]] = (step["Name"], False)
        self.deps = {name: self._dependencies(step) for name, step in self.steps.items()}
        self.outcomes: dict[str, bool] = {}
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.slots = threading.BoundedSemaphore(max_processes())

    def _dependencies(self, step: dict[str, Any]) -> set[str]:
        own = step["Arguments"] if step["Type"] != "Condition" else step["Arguments"].get("Conditions", [])
        deps = set(step.get("DependsOn", [])) | step_references(own)
        if step["Name"] in self.branch_of:
            deps.add(self.branch_of[step["Name"]][0])
        unknown = deps - set(self.steps)
        if unknown:
            raise ValueError(f"step {step['Name']!r} depends on unknown step(s) {sorted(unknown)}")
        return deps

    # Graph walk ---------------------------------------------------------------------------------

    def run(self) -> None:
        self.store.beat(self.arn)  # alive before the first database write, which a lock may delay
        beat = threading.Thread(target=self._heartbeat, daemon=True)
        beat.start()
        if runs_warm(self.steps.values()):
            warm.start_server()  # unless the runner's entry point has started it already
        try:
            self.store.update_execution(self.arn, runner_pid=os.getpid(), heartbeat=time.time())
            self._walk()
        finally:
            self.finished.set()

    def _walk(self) -> None:
        done = self._completed()
        skipped: set[str] = set()
        failures: list[str] = []
        running: dict[Future[None], str] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="step") as pool:
            while True:
                self._check_stop()
                skipped = self._skipped(done)
                started = set(running.values())
                ready = [
                    name
                    for name in self.steps
                    if name not in done | skipped | started
                    and self.deps[name] <= done
                    and not failures
                    and not self.stopping.is_set()
                ]
                for name in ready[: self.parallelism - len(running)]:
                    running[pool.submit(self._run_step, name)] = name
                if not running:
                    break
                finished, _ = wait(list(running), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(name)
                    elif not isinstance(error, StepStopped):
                        failures.append(self._failure_text(name, error))
        if self.stopping.is_set():
            self._finish("Stopped", None)
        elif failures:
            self._finish("Failed", failures[0])
        else:
            self._finish("Succeeded", None)

    def _finish(self, status: str, failure_reason: str | None) -> None:
        """The outcome file first (a lock cannot hold it up), then the database."""
        self.store.write_outcome(self.arn, status, failure_reason)
        settle(self.store, self.arn, status, failure_reason)

    def _completed(self) -> set[str]:
        """Steps that succeeded: as the database says, or as their own completion records say
        when the database missed it (their properties are restored, the database is corrected)."""
        done: set[str] = set()
        for row in self.store.steps(self.arn):
            if row["status"] == "Succeeded":
                done.add(row["name"])
                self._restore(row["name"], json.loads(row["properties"]))
        for name, record in self.store.step_records(self.arn).items():
            if name in self.steps and name not in done:
                self.store.record_step(self.arn, record)
                done.add(name)
                self._restore(name, record["properties"])
        return done

    def _restore(self, name: str, properties: dict[str, Any]) -> None:
        self.context.steps[name] = properties
        if "Outcome" in properties:
            self.outcomes[name] = properties["Outcome"]

    def _skipped(self, done: set[str]) -> set[str]:
        """Steps that will never run (an untaken branch, or after a step that did not run)."""
        skipped: set[str] = set()
        grew = True
        while grew:
            grew = False
            for name in self.steps:
                if name not in done | skipped and self._not_executed(name, skipped):
                    skipped.add(name)
                    grew = True
        return skipped

    def reconcile(self) -> bool:
        """Settle an execution whose runner is gone from the files it left: its outcome file, or
        completion records covering every step that would run. False when work is left."""
        done = self._completed()  # first: steps the database missed read as they ended, whatever the outcome
        outcome = self.store.outcome(self.arn)
        if outcome is None:
            if not set(self.steps) <= done | self._skipped(done):
                return False
            outcome = {"status": "Succeeded", "failure_reason": None}
        settle(self.store, self.arn, outcome["status"], outcome["failure_reason"])
        return True

    def _not_executed(self, name: str, skipped: set[str]) -> bool:
        if name in self.branch_of:
            condition, wanted = self.branch_of[name]
            if condition in self.outcomes and self.outcomes[condition] != wanted:
                return True
        return bool(self.deps[name] & skipped)

    def _failure_text(self, name: str, error: BaseException) -> str:
        text = str(error) if isinstance(error, StepFailed | ExpressionError) else f"{type(error).__name__}: {error}"
        text = mask(text)  # failure reasons are stored and shown: never with a secret in them
        return text if self.steps[name]["Type"] == "Fail" else f"Step failure: {name}: {text}"

    def _check_stop(self) -> None:
        row = self.store.execution(self.arn)
        if row is not None and row["stop_requested"] and not self.stopping.is_set():
            self.stopping.set()

    def _heartbeat(self) -> None:
        # A file, not the database: a process holding the database lock cannot stop the beat, and
        # nothing here may end the thread while the runner works.
        interval = storage.env_number(HEARTBEAT_ENV, HEARTBEAT_SECONDS)
        while not self.finished.wait(interval):
            try:
                self.store.beat(self.arn)
            except OSError as err:
                print(f"heartbeat: could not touch the heartbeat file: {err}", file=sys.stderr, flush=True)

    # Steps --------------------------------------------------------------------------------------

    def _run_step(self, name: str) -> None:
        step = self.steps[name]
        start = self.store.start_step(self.arn, name, step["Type"])
        try:
            metadata, properties = getattr(self, f"_run_{step['Type'].lower()}")(step)
        except StepStopped:
            self.store.end_step(self.arn, name, "Stopped", "The execution was stopped")
            raise
        except Exception as err:
            # Whatever broke, the step must not read Executing forever; the graph walk reports it.
            reason = mask(str(err) if isinstance(err, StepFailed | ExpressionError) else f"{type(err).__name__}: {err}")
            metadata = {"Fail": {"ErrorMessage": reason}} if step["Type"] == "Fail" else {}
            self.store.end_step(self.arn, name, "Failed", reason, metadata=metadata)
            raise
        self.context.steps[name] = properties
        record = {"name": name, "type": step["Type"], "start": start, "end": time.time()}
        self.store.write_step_record(self.arn, {**record, "metadata": metadata, "properties": properties})
        try:
            self.store.end_step(
                self.arn, name, "Succeeded", metadata=metadata, properties=properties, end=record["end"]
            )
        except StateLockedError as err:
            # The completion record holds the success; the next reconciliation writes it to the database.
            print(f"step {name}: succeeded, recorded in its completion record only: {err}", file=sys.stderr)

    def _run_condition(self, step: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        outcome = all(self.context.condition(c) for c in step["Arguments"].get("Conditions", []))
        self.outcomes[step["Name"]] = outcome
        return {"Condition": {"Outcome": "True" if outcome else "False"}}, {"Outcome": outcome}

    def _run_fail(self, step: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        raise StepFailed(str(self.context.resolve(step["Arguments"].get("ErrorMessage", ""))))

    def _run_processing(self, step: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        args = self.context.resolve(step["Arguments"])
        name = step["Name"]
        job_name = f"pipelines-{self.exec_id}-{name}"[:63]
        job_arn = self.arn.split(":pipeline/")[0] + f":processing-job/{job_name.lower()}"
        count = int(args["ProcessingResources"]["ClusterConfig"]["InstanceCount"])
        if not 1 <= count <= MAX_INSTANCE_COUNT:
            raise StepFailed(
                f"InstanceCount must be between 1 and {MAX_INSTANCE_COUNT} (SageMaker's limit), got {count}"
            )
        hosts = [f"algo-{i + 1}" for i in range(count)]
        step_dir = self.store.execution_dir(self.arn) / name
        shutil.rmtree(step_dir, ignore_errors=True)  # a retried step starts clean
        roots = [step_dir / host for host in hosts]
        for host, root in zip(hosts, roots, strict=True):
            self._prepare_instance(root, host, hosts, args.get("ProcessingInputs", []))
        self._run_instances(name, args, roots)
        outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for output in outputs:
            self._upload_output(output, roots)
        properties = {
            **args,
            "ProcessingJobName": job_name,
            "ProcessingJobArn": job_arn,
            "ProcessingJobStatus": "Completed",
            "ProcessingInputs": {i["InputName"]: i for i in args.get("ProcessingInputs", [])},
            "ProcessingOutputConfig": {
                **args.get("ProcessingOutputConfig", {}),
                "Outputs": {o["OutputName"]: o for o in outputs},
            },
            "PropertyFiles": self._property_files(step, outputs),
        }
        return {"ProcessingJob": {"Arn": job_arn}}, properties

    def _prepare_instance(self, root: Path, host: str, hosts: list[str], inputs: list[dict[str, Any]]) -> None:
        config = root / "config"
        config.mkdir(parents=True, exist_ok=True)
        resource = {"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}
        (config / "resourceconfig.json").write_text(json.dumps(resource))
        for item in inputs:
            source = item.get("S3Input")
            if source is None:
                raise StepFailed(f"input {item.get('InputName')!r}: only S3Input is supported locally")
            target = opt_ml_path(root, source["LocalPath"])
            prefix = source["S3Uri"]
            uris = [prefix] if storage.exists(prefix) else storage.list_uris(prefix)
            for uri in uris:
                relative = uri[len(prefix) :].lstrip("/") or uri.rsplit("/", 1)[-1]
                dest = target / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(storage.read_bytes(uri))

    def _run_instances(self, name: str, args: dict[str, Any], roots: list[Path]) -> None:
        """Run one process per instance, at most ``max_processes()`` at once across this runner's steps."""
        command = container_command(args["AppSpecification"])
        environment = {**os.environ, **{k: str(v) for k, v in args.get("Environment", {}).items()}}
        waiting = list(roots)
        procs: list[tuple[Path, StepProcess]] = []
        holding: list[StepProcess] = []  # started processes that still hold a slot
        try:
            while True:
                # Poll every instance each round: one that failed ends the step at once, whichever it is.
                codes = [p.poll() for _, p in procs]
                for proc in [p for p in holding if p.returncode is not None]:
                    holding.remove(proc)
                    self.slots.release()
                if self.stopping.is_set() or any(code not in (None, 0) for code in codes):
                    self._terminate(procs)
                    break
                if not waiting and None not in codes:
                    break
                started = False
                while waiting and self.slots.acquire(blocking=False):
                    root = waiting.pop(0)
                    procs.append((root, self._start_instance(command, environment, root)))
                    holding.append(procs[-1][1])
                    started = True
                if started:
                    self.store.update_step(self.arn, name, pids=[p.pid for _, p in procs])
                time.sleep(INSTANCE_POLL_SECONDS)
        finally:
            for _ in holding:
                self.slots.release()
        if self.stopping.is_set():
            raise StepStopped()
        # The instance that failed by itself explains the step, not the ones terminated because of it.
        for root, proc in sorted(procs, key=lambda rp: rp[1].returncode < 0):
            if proc.returncode != 0:
                message = root / "output" / "message"  # the container's own account, as SageMaker reports it
                if message.is_file():
                    reason = message.read_text(errors="replace").strip()
                else:
                    reason = (root / "output.log").read_text(errors="replace")[-LOG_TAIL_CHARS:].strip()
                raise StepFailed(f"AlgorithmError: {root.name} exited with code {proc.returncode}: {reason}")

    @staticmethod
    def _start_instance(command: list[str], environment: dict[str, str], root: Path) -> StepProcess:
        env = {**environment, "EVALSTACK_OPT_ML_ROOT": str(root)}
        arguments = warm.step_arguments(command, env)
        if arguments is not None:
            try:
                return WarmProcess(arguments, env, root, root / "output.log")
            except (OSError, EOFError) as err:
                # The warm parent is gone (it could not start, or died): a cold interpreter does the same work.
                print(f"{root}: cannot fork the step from the warm parent, starting it cold: {err}", file=sys.stderr)
        with open(root / "output.log", "wb") as log:
            return subprocess.Popen(
                command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _terminate(self, procs: list[tuple[Path, StepProcess]]) -> None:
        kill_process_groups([p.pid for _, p in procs if p.poll() is None])
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and any(p.poll() is None for _, p in procs):
            time.sleep(POLL_SECONDS)
        kill_process_groups([p.pid for _, p in procs if p.poll() is None], signal.SIGKILL)
        for _, proc in procs:
            proc.wait()

    def _upload_output(self, output: dict[str, Any], roots: list[Path]) -> None:
        target = output["S3Output"]["S3Uri"]
        for root in roots:
            local = opt_ml_path(root, output["S3Output"]["LocalPath"])
            if not local.exists():
                continue
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                # SageMaker's own output upload overwrites (a retried step re-uploads): so does this one.
                storage.upload_file(path, storage.join(target, path.relative_to(local).as_posix()), replace=True)

    def _property_files(self, step: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
        by_name = {o["OutputName"]: o for o in outputs}
        files: dict[str, Any] = {}
        for pf in step.get("PropertyFiles", []):
            output = by_name.get(pf["OutputName"])
            if output is None:
                raise StepFailed(f"property file {pf['PropertyFileName']}: no output named {pf['OutputName']!r}")
            uri = storage.join(output["S3Output"]["S3Uri"], pf["FilePath"])
            try:
                files[pf["PropertyFileName"]] = json.loads(storage.read_text(uri))
            except (FileNotFoundError, json.JSONDecodeError) as err:
                raise StepFailed(f"property file {pf['PropertyFileName']}: cannot read {uri}: {err}") from err
        return files


def settle(store: Store, arn: str, status: str, failure_reason: str | None) -> None:
    """Write a decided outcome to the database: steps still running end with it, then the execution."""
    if status != "Succeeded":
        reason = "The execution was stopped" if status == "Stopped" else failure_reason
        store.end_running_steps(arn, status, reason)
    store.finish_execution(arn, status, failure_reason)


def container_command(app: dict[str, Any]) -> list[str]:
    """A Processing step's container command (its AppSpecification), run by this interpreter (the local "image")."""
    command = [str(c) for c in app.get("ContainerEntrypoint", [])] + [str(c) for c in app.get("ContainerArguments", [])]
    if command and command[0] in ("python", "python3"):
        command[0] = sys.executable
    return command


def runs_warm(steps: Iterable[dict[str, Any]]) -> bool:
    """Whether any of ``steps`` runs our step entry point, forked from the warm parent."""
    return any(
        warm.is_entry(container_command(step["Arguments"]["AppSpecification"]))
        for step in steps
        if step["Type"] == "Processing"
    )


def opt_ml_path(root: Path, container_path: str) -> Path:
    """Where a container path (``/opt/ml/...``) of one instance lives locally."""
    prefix = "/opt/ml/"
    if not container_path.startswith(prefix):
        raise StepFailed(f"local path {container_path!r} is outside /opt/ml")
    return root / container_path[len(prefix) :]


def _stand_down(log: Path) -> int:
    """A standby runner that got no execution: stop its warm parent (still importing, maybe) and exit."""
    log.unlink(missing_ok=True)
    if os.getpgrp() == os.getpid():  # detached: the group is this runner's warm parent and itself
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpid(), signal.SIGTERM)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one execution in this process (``python -m evalstack.pipeline.local --detach`` forks first)."""
    parser = argparse.ArgumentParser(prog="python -m evalstack.pipeline.local")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("execution_arn", nargs="?")
    target.add_argument(
        "--standby", metavar="LOG", type=Path,
        help="read the execution's ARN from standard input; LOG is this runner's output until then "
        "(see evalstack.pipeline.local.standby)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.standby is not None:
        arn = sys.stdin.readline().strip()
        if not arn:
            return _stand_down(args.standby)
        # From here on as a runner the client started with the ARN: no input (cold steps inherit it).
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    else:
        arn = args.execution_arn
    store = Store()
    runner: Runner | None = None
    try:
        runner = Runner(store, arn)
        runner.run()
    except Exception as err:
        # The runner itself broke (bad definition, database error): the execution must not stay
        # Executing, and must not read Failed when its outcome was decided before the break.
        outcome = store.outcome(arn) or {
            "status": "Failed",
            "failure_reason": mask(f"runner error: {type(err).__name__}: {err}"),
        }
        store.write_outcome(arn, outcome["status"], outcome["failure_reason"])
        if runner is not None:
            runner.reconcile()
        else:
            settle(store, arn, outcome["status"], outcome["failure_reason"])
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
