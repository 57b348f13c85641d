"""EvaluationPipelineExecution and its status types, as in the reference API.

An execution is a SageMaker pipeline execution on either backend (see :mod:`evalstack.runtime.backend`);
every method here is a SageMaker API call on the backend's client, so the two behave alike.
Results live under ``<OutputPath>/<pipeline execution id>/`` (the definition's output layout).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from evalstack import storage
from evalstack.catalog.limits import MAX_CONCURRENT_EVALUATIONS
from evalstack.runtime.backend import Backend, error_code, resolve_backend
from evalstack.spec import EVAL_TYPES

TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
ACTIVE_STATUSES = ("Executing", "Stopping")
WAIT_TARGETS = ("Executing", "Stopping", "Stopped", "Failed", "Succeeded")
# The reference API reports a finished step or execution as "Completed"; SageMaker says "Succeeded".
_REFERENCE_STATUS = {"Succeeded": "Completed"}

# wait() on SageMaker: first check after FIRST_POLL_SECONDS, doubling up to ``poll``; past that the
# interval is a fraction of the time already waited, so a two-hour run costs at most 60 describe calls,
# but it never exceeds max(poll, MAX_POLL_SECONDS): the end is noticed within 5 minutes (or ``poll``).
FIRST_POLL_SECONDS = 1.0
ELAPSED_FRACTION = 0.2
MAX_POLL_SECONDS = 300.0
# wait() on the local backend: a describe call is one SQLite read, so checking often costs nothing
# and a short run ends within this interval of its last step.
LOCAL_POLL_SECONDS = 0.05
# The CLI's progress callback reads files; call it at most this often however fast wait() polls.
PROGRESS_SECONDS = 1.0


class ConcurrencyLimitError(RuntimeError):
    """More evaluations would run at once than the service limit allows."""


class FailedStatusError(RuntimeError):
    """wait(): the execution ended in another status than the one waited for (the released SDK's name;
    a RuntimeError, as the reference documents)."""

    def __init__(self, message: str, status: str, reason: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class TimeoutExceededError(TimeoutError):
    """wait(): ``timeout`` passed first (the released SDK's name; a TimeoutError, as the reference documents)."""


class ExecutionNotFoundError(ClientError, LookupError):
    """No execution has that name, id or ARN. A ClientError (ResourceNotFound), as SageMaker raises."""

    def __init__(self, reference: str, where: str, operation: str = "DescribePipelineExecution") -> None:
        message = (
            f"no evalstack execution has the name, id or ARN {reference!r} ({where}); "
            "list them with `evalstack executions list`"
        )
        super().__init__({"Error": {"Code": "ResourceNotFound", "Message": message}}, operation)
        self.reference = reference


def normalize_eval_type(value: Any) -> str:
    """An evaluation kind from any spelling: ``custom_scorer``, ``custom-scorer``, ``customscorer``
    (the released SDK's EvalType value), ``CustomScorer`` or an enum member carrying one of those."""
    raw = getattr(value, "value", value)
    if isinstance(raw, str):
        key = re.sub(r"[^a-z]", "", raw.lower())
        for kind in EVAL_TYPES:
            if kind.replace("_", "") == key:
                return kind
    raise ValueError(f"eval_type: must be one of {list(EVAL_TYPES)} (any case, - or _ or none), got {value!r}")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


def next_poll_interval(previous: float | None, waited: float, poll: float) -> float:
    """Seconds until the next status check, given the last interval and the time waited so far."""
    if previous is None:
        return min(poll, FIRST_POLL_SECONDS)
    ramp = min(previous * 2, poll)
    return min(max(ramp, waited * ELAPSED_FRACTION), max(poll, MAX_POLL_SECONDS))


@dataclass
class StepDetail:
    name: str
    status: str
    start_time: str | None = None
    end_time: str | None = None
    display_name: str | None = None
    failure_reason: str | None = None
    # The step's job: a Processing job ARN on SageMaker, the local runner's job ARN locally.
    job_arn: str | None = None


class ExecutionStatus(str):
    """``execution.status``: the status string the reference compares (``== "Succeeded"``) that also
    carries the released SDK's ``overall_status``, ``step_details`` and ``failure_reason``."""

    failure_reason: str | None
    _steps: Callable[[], list[StepDetail]] | None

    def __new__(
        cls, value: str, failure_reason: str | None = None, steps: Callable[[], list[StepDetail]] | None = None
    ) -> ExecutionStatus:
        status = super().__new__(cls, value)
        status.failure_reason = failure_reason
        status._steps = steps
        return status

    @property
    def overall_status(self) -> str:
        return str(self)

    @property
    def step_details(self) -> list[StepDetail]:
        """Every started step (one ListPipelineExecutionSteps call per read)."""
        return self._steps() if self._steps is not None else []


@dataclass
class PipelineExecutionStatus:
    overall_status: str
    step_details: list[StepDetail] = field(default_factory=list)
    failure_reason: str | None = None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


_JOB_KINDS = ("ProcessingJob", "TrainingJob", "TransformJob", "TuningJob", "AutoMLJob")


def _job_arn(metadata: Mapping[str, Any] | None) -> str | None:
    for kind in _JOB_KINDS:
        arn = ((metadata or {}).get(kind) or {}).get("Arn")
        if arn:
            return str(arn)
    return None


def _not_found(err: ClientError) -> bool:
    return error_code(err) == "ResourceNotFound" or "does not exist" in str(err) or "not found" in str(err).lower()


def _in_notebook() -> bool:
    """True in a Jupyter kernel (where HTML can be displayed), False in a terminal or plain IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _token(*parts: str) -> str:
    """A ClientRequestToken that is the same for the same request, so a retried call is not repeated."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _description(eval_type: str, output_path: str) -> str:
    # The execution carries what the client needs to find its results again (after a restart,
    # from another machine); DescribePipelineExecution and ListPipelineExecutions return it.
    return json.dumps({"evalstack": {"eval_type": eval_type, "output_path": output_path}}, sort_keys=True)


def _parse_description(text: str | None) -> dict[str, str]:
    try:
        found = json.loads(text or "")["evalstack"]
    except (ValueError, KeyError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


@dataclass
class EvaluationPipelineExecution:
    """One evaluation run. ``s3_output_path`` is where its results.json and friends live."""

    name: str
    arn: str
    status: str
    eval_type: str
    s3_output_path: str
    creation_time: datetime | None
    failure_reason: str | None = None
    last_modified_time: datetime | None = None
    _backend: Backend | None = field(default=None, repr=False, compare=False)
    _clock: Clock = field(default=time, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._set_status(self.status, self.failure_reason)

    def _set_status(self, status: str, failure_reason: str | None) -> None:
        self.failure_reason = failure_reason
        self.status = ExecutionStatus(status, failure_reason, self.steps)

    # Construction -----------------------------------------------------------------------------

    @classmethod
    def _from_summary(
        cls, backend: Backend, summary: Mapping[str, Any], pipeline_name: str
    ) -> EvaluationPipelineExecution:
        """From a DescribePipelineExecution response or a ListPipelineExecutions summary."""
        arn = summary["PipelineExecutionArn"]
        execution_id = arn.rsplit("/", 1)[-1]
        meta = _parse_description(summary.get("PipelineExecutionDescription"))
        output_path = meta.get("output_path") or _output_path_parameter(backend, arn)
        eval_type = meta.get("eval_type") or backend.eval_type_of(pipeline_name) or "unknown"
        return cls(
            name=summary.get("PipelineExecutionDisplayName") or execution_id,
            arn=arn,
            status=summary["PipelineExecutionStatus"],
            eval_type=eval_type,
            s3_output_path=storage.join(output_path, execution_id) if output_path else "",
            creation_time=summary.get("CreationTime") or summary.get("StartTime"),
            failure_reason=summary.get("FailureReason") or summary.get("PipelineExecutionFailureReason") or None,
            last_modified_time=summary.get("LastModifiedTime"),
            _backend=backend,
        )

    @classmethod
    def get(
        cls,
        pipeline_execution_arn: str | None = None,
        session: Any = None,
        region: str | None = None,
        *,
        arn: str | None = None,
    ) -> EvaluationPipelineExecution:
        """One execution by its ARN (the reference's ``pipeline_execution_arn=``, the released SDK's
        ``arn=``), its id (the ARN's last part) or its name. ExecutionNotFoundError (a ClientError)
        when none matches."""
        reference = pipeline_execution_arn or arn
        if not reference or (pipeline_execution_arn and arn and pipeline_execution_arn != arn):
            raise ValueError("get: give one execution ARN, id or name (pipeline_execution_arn= or arn=)")
        backend = resolve_backend(session, region)
        if not reference.startswith("arn:"):
            reference = _arn_of(backend, reference)
        try:
            desc = backend.client.describe_pipeline_execution(PipelineExecutionArn=reference)
        except ClientError as err:
            if _not_found(err) or error_code(err) == "ValidationException":
                raise ExecutionNotFoundError(reference, _where(backend)) from err
            raise
        pipeline_name = desc["PipelineArn"].rsplit("/", 1)[-1]
        return cls._from_summary(backend, desc, pipeline_name)

    @classmethod
    def get_all(
        cls, eval_type: Any = None, session: Any = None, region: str | None = None
    ) -> list[EvaluationPipelineExecution]:
        """Executions of ``eval_type`` (every kind when None), newest first. ``eval_type`` may be any
        spelling of a kind (``custom_scorer``, ``customscorer``, ``custom-scorer``) or an enum of one."""
        backend = resolve_backend(session, region)
        kinds = [normalize_eval_type(eval_type)] if eval_type else list(EVAL_TYPES)
        out: list[EvaluationPipelineExecution] = []
        for kind in kinds:
            pipeline = backend.find_pipeline(kind)
            for summary in _summaries(backend, pipeline) if pipeline else ():
                execution = cls._from_summary(backend, summary, pipeline)
                execution.eval_type = kind
                out.append(execution)
        out.sort(key=lambda e: e.creation_time or datetime.min, reverse=True)
        return out

    @classmethod
    def start(
        cls,
        eval_type: str,
        name: str,
        pipeline_definition: str | Mapping[str, Any],
        role_arn: str,
        s3_output_path: str,
        session: Any = None,
        region: str | None = None,
        tags: list[dict[str, str]] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        pipeline_name: str | None = None,
    ) -> EvaluationPipelineExecution:
        """Create or update the pipeline of ``eval_type`` with ``pipeline_definition``, then start it.

        ``parameters`` are pipeline parameter values besides ``OutputPath`` (= ``s3_output_path``).
        """
        backend = resolve_backend(session, region)
        definition = pipeline_definition if isinstance(pipeline_definition, str) else json.dumps(pipeline_definition)
        try:
            json.loads(definition)
        except json.JSONDecodeError as err:
            raise ValueError(f"pipeline_definition: not valid JSON: {err}") from err
        eval_type = normalize_eval_type(eval_type)
        pipeline = backend.pipeline_name(eval_type, pipeline_name)
        with backend.start_lock:
            _put_pipeline(backend, pipeline, definition, role_arn, tags or [])
            return cls._launch(backend, eval_type, pipeline, name, s3_output_path, parameters or {})

    @classmethod
    def _launch(
        cls,
        backend: Backend,
        eval_type: str,
        pipeline_name: str,
        name: str,
        output_path: str,
        parameters: Mapping[str, Any],
    ) -> EvaluationPipelineExecution:
        """StartPipelineExecution on a pipeline that exists; ``name`` becomes the display name."""
        eval_type = normalize_eval_type(eval_type)
        _check_capacity(backend)
        values = {"OutputPath": output_path, **parameters}
        try:
            response = backend.client.start_pipeline_execution(
                PipelineName=pipeline_name,
                PipelineExecutionDisplayName=name,
                PipelineExecutionDescription=_description(eval_type, output_path),
                PipelineParameters=[{"Name": k, "Value": _parameter_text(v)} for k, v in values.items()],
                ClientRequestToken=_token(pipeline_name, name, output_path),
            )
        except ClientError as err:
            if error_code(err) == "ResourceLimitExceeded":
                raise ConcurrencyLimitError(str(err)) from err
            raise
        arn = response["PipelineExecutionArn"]
        execution = cls(
            name=name,
            arn=arn,
            status="Executing",
            eval_type=eval_type,
            s3_output_path=storage.join(output_path, arn.rsplit("/", 1)[-1]),
            creation_time=None,
            _backend=backend,
        )
        execution.refresh()
        return execution

    # Operations -------------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = resolve_backend()
        return self._backend

    def refresh(self) -> None:
        """DescribePipelineExecution: update ``status``, ``failure_reason`` and the timestamps."""
        desc = self.backend.client.describe_pipeline_execution(PipelineExecutionArn=self.arn)
        self.creation_time = desc.get("CreationTime", self.creation_time)
        self.last_modified_time = desc.get("LastModifiedTime", self.last_modified_time)
        self._set_status(desc["PipelineExecutionStatus"], desc.get("FailureReason") or None)

    def wait(
        self,
        target_status: str | float = "Succeeded",
        poll: float | None = None,
        timeout: float | None = None,
        *,
        progress: Callable[[EvaluationPipelineExecution], None] | None = None,
    ) -> None:
        """Block until the execution reaches ``target_status`` (default Succeeded).

        Both call styles work: the reference's ``wait(poll=60, timeout=7200)`` (or ``wait(60, 7200)``)
        and the released SDK's ``wait(target_status="Succeeded", poll=5, timeout=None)``.
        Raises FailedStatusError (a RuntimeError) when the execution ends in another status, and
        TimeoutExceededError (a TimeoutError) after ``timeout`` seconds.

        On SageMaker the interval starts at 1 s and grows towards ``poll`` (default 30 s), then with the
        time waited, never beyond max(poll, 5 minutes). On the local backend the state is checked every
        50 ms, so wait() returns as soon as the execution ends. ``progress`` is called after a status
        check at most once a second, and after the last one (the CLI prints progress with it).
        """
        if not isinstance(target_status, str):  # the reference's positional wait(poll, timeout)
            if timeout is not None:
                raise ValueError("wait: give wait(poll, timeout) or wait(target_status, poll, timeout)")
            target_status, poll, timeout = "Succeeded", target_status, poll
        poll = 30.0 if poll is None else poll
        if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
            raise ValueError(f"poll: must be a positive number of seconds, got {poll!r}")
        if target_status not in WAIT_TARGETS:
            raise ValueError(f"target_status: must be one of {list(WAIT_TARGETS)}, got {target_status!r}")
        local = self.backend.is_local
        start = self._clock.monotonic()
        reported: float | None = None
        interval: float | None = None
        self.refresh()
        while True:
            now = self._clock.monotonic()
            done = self.status == target_status or self.status in TERMINAL_STATUSES
            if progress is not None and (done or reported is None or now - reported >= PROGRESS_SECONDS):
                progress(self)
                reported = now
            if done:
                break
            waited = now - start
            if timeout is not None and waited >= timeout:
                raise TimeoutExceededError(
                    f"execution {self.name} ({self.arn}) still {self.status} after {timeout}s; it keeps running: "
                    "call wait() again, or stop() it"
                )
            interval = LOCAL_POLL_SECONDS if local else next_poll_interval(interval, waited, poll)
            self._clock.sleep(interval if timeout is None else min(interval, timeout - waited))
            self.refresh()
        if self.status != target_status:
            raise FailedStatusError(self._end_message(target_status), self.status, self.failure_reason)

    def _end_message(self, target_status: str) -> str:
        if self.status == "Stopped":
            why = self.failure_reason or "it was stopped (StopPipelineExecution) before it finished"
        elif self.status == "Failed":
            why = self.failure_reason or "no failure reason was recorded; see execution.get_status().step_details"
        else:
            why = f"it ended {self.status}, not {target_status}"
        return f"execution {self.name} ({self.arn}) {self.status}: {why}"

    def stop(self) -> None:
        """StopPipelineExecution (ClientError when it has already ended), then refresh."""
        self.backend.client.stop_pipeline_execution(
            # A fresh token: after a retry(), stopping again is a new request, not a repeat of the first.
            PipelineExecutionArn=self.arn,
            ClientRequestToken=_token("stop", self.arn, uuid.uuid4().hex),
        )
        self.refresh()

    def retry(self) -> None:
        """RetryPipelineExecution of a failed or stopped execution: finished steps are not redone."""
        _check_capacity(self.backend)
        # Each retry() is a new request; the token makes the SDK's own retries of it idempotent.
        self.backend.client.retry_pipeline_execution(
            PipelineExecutionArn=self.arn, ClientRequestToken=_token("retry", self.arn, uuid.uuid4().hex)
        )
        self.refresh()

    def get_status(self) -> PipelineExecutionStatus:
        """The execution's status with every started step."""
        self.refresh()
        overall = _REFERENCE_STATUS.get(self.status, self.status)
        return PipelineExecutionStatus(overall, self.steps(), self.failure_reason)

    def steps(self) -> list[StepDetail]:
        """Every started step, oldest first (ListPipelineExecutionSteps, all pages)."""
        steps: list[StepDetail] = []
        paginator = self.backend.client.get_paginator("list_pipeline_execution_steps")
        for page in paginator.paginate(PipelineExecutionArn=self.arn, SortOrder="Ascending"):
            for step in page["PipelineExecutionSteps"]:
                steps.append(
                    StepDetail(
                        name=step["StepName"],
                        status=_REFERENCE_STATUS.get(step["StepStatus"], step["StepStatus"]),
                        start_time=_iso(step.get("StartTime")),
                        end_time=_iso(step.get("EndTime")),
                        display_name=step.get("StepDisplayName"),
                        failure_reason=step.get("FailureReason"),
                        job_arn=_job_arn(step.get("Metadata")),
                    )
                )
        return steps

    def show_results(self) -> None:
        """The headline metrics: a table printed in a terminal, HTML displayed in a notebook.

        ValueError unless the execution succeeded, as in the released SDK."""
        from evalstack.results.summary import summary_html, summary_text

        self.refresh()
        if self.status != "Succeeded":
            raise ValueError(
                f"Cannot show results: execution {self.name} is {self.status}. Results exist only after it "
                "succeeded; use execution.wait() to wait for it, or execution.status for details."
            )
        results = self.results()
        if _in_notebook():
            from IPython.display import HTML, display

            display(HTML(summary_html(results)))
        else:
            print(summary_text(results))

    def results(self) -> dict[str, Any]:
        """results.json, plus comparison.json under "comparison" when the base model was evaluated."""
        out = json.loads(storage.read_text(storage.join(self.s3_output_path, "results.json")))
        comparison = storage.join(self.s3_output_path, "comparison.json")
        if storage.exists(comparison):
            out["comparison"] = json.loads(storage.read_text(comparison))
        return out


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _summaries(backend: Backend, pipeline_name: str) -> list[dict[str, Any]]:
    paginator = backend.client.get_paginator("list_pipeline_executions")
    try:
        return [
            summary
            for page in paginator.paginate(PipelineName=pipeline_name, SortOrder="Descending")
            for summary in page["PipelineExecutionSummaries"]
        ]
    except ClientError as err:
        # A local pipeline is created on first use; before that it has no executions.
        if error_code(err) in ("ResourceNotFound", "ValidationException"):
            return []
        raise


def _output_path_parameter(backend: Backend, arn: str) -> str | None:
    """OutputPath of an execution started without our description (e.g. by the trigger Lambda)."""
    if not hasattr(backend.client, "list_pipeline_parameters_for_execution"):
        return None  # the local client: every local execution is started with our description
    for page in backend.client.get_paginator("list_pipeline_parameters_for_execution").paginate(
        PipelineExecutionArn=arn
    ):
        for item in page["PipelineParameters"]:
            if item["Name"] == "OutputPath":
                return item["Value"]
    return None


def _where(backend: Backend) -> str:
    return f"local backend, EVALSTACK_HOME {backend.home}" if backend.is_local else "SageMaker backend"


def _arn_of(backend: Backend, reference: str) -> str:
    """The ARN of the execution whose id or display name is ``reference``, among evalstack's pipelines."""
    found = []
    for eval_type in EVAL_TYPES:
        pipeline = backend.find_pipeline(eval_type)
        for summary in _summaries(backend, pipeline) if pipeline else ():
            arn = summary["PipelineExecutionArn"]
            if reference in (arn.rsplit("/", 1)[-1], summary.get("PipelineExecutionDisplayName")):
                found.append(arn)
    if not found:
        raise ExecutionNotFoundError(reference, _where(backend), "ListPipelineExecutions")
    if len(found) > 1:
        raise ValueError(f"{reference!r} names {len(found)} executions ({', '.join(found)}); give the ARN")
    return found[0]


def _check_capacity(backend: Backend) -> None:
    """At most MAX_CONCURRENT_EVALUATIONS executions of evalstack's pipelines run at once.

    The local client also enforces this atomically; on SageMaker this is the only check.
    """
    running = 0
    for eval_type in EVAL_TYPES:
        pipeline = backend.find_pipeline(eval_type)
        if pipeline:
            running += sum(s["PipelineExecutionStatus"] in ACTIVE_STATUSES for s in _summaries(backend, pipeline))
    if running >= MAX_CONCURRENT_EVALUATIONS:
        where = f"EVALSTACK_HOME {backend.home}" if backend.is_local else "this account and region"
        raise ConcurrencyLimitError(
            f"at most {MAX_CONCURRENT_EVALUATIONS} evaluations can run at once ({where}); {running} are running. "
            "Wait for one to finish (execution.wait()) or stop one (execution.stop())."
        )


def _put_pipeline(backend: Backend, name: str, definition: str, role_arn: str, tags: list[dict[str, str]]) -> None:
    """CreatePipeline, or UpdatePipeline when it exists with another definition or role."""
    client = backend.client
    try:
        current = client.describe_pipeline(PipelineName=name)
    except ClientError as err:
        if error_code(err) not in ("ResourceNotFound", "ValidationException"):
            raise
        current = None
    if current is None:
        create: dict[str, Any] = {
            "PipelineName": name,
            "PipelineDefinition": definition,
            "RoleArn": role_arn,
            "ClientRequestToken": _token("create", name, definition),
        }
        if tags:
            create["Tags"] = tags
        try:
            client.create_pipeline(**create)
            return
        except ClientError as err:
            # Another process created it meanwhile: fall through to the update.
            if error_code(err) != "ValidationException" or "exist" not in str(err):
                raise
    elif json.loads(current["PipelineDefinition"]) == json.loads(definition) and current.get("RoleArn") == role_arn:
        return
    client.update_pipeline(PipelineName=name, PipelineDefinition=definition, RoleArn=role_arn)
