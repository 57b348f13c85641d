"""EvaluationPipelineExecution and its status types, as in the reference API.

An execution is a SageMaker pipeline execution on either backend (see :mod:`evalstack.runtime.backend`);
every method here is a SageMaker API call on the backend's client, so the two behave alike.
Results live under ``<OutputPath>/<pipeline execution id>/`` (the definition's output layout).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from evalstack import storage
from evalstack.catalog.limits import MAX_CONCURRENT_EVALUATIONS
from evalstack.runtime.backend import Backend, check_eval_type, error_code, resolve_backend
from evalstack.spec import EVAL_TYPES

TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
ACTIVE_STATUSES = ("Executing", "Stopping")
# The reference API reports a finished step or execution as "Completed"; SageMaker says "Succeeded".
_REFERENCE_STATUS = {"Succeeded": "Completed"}

# wait(): first check after FIRST_POLL_SECONDS, doubling up to ``poll``; past that the interval is a
# fraction of the time already waited, so a long run costs few describe calls (see bench/wait_calls.py)
# and its end is noticed within that fraction of its runtime. Never longer than MAX_POLL_SECONDS.
FIRST_POLL_SECONDS = 1.0
ELAPSED_FRACTION = 0.15
MAX_POLL_SECONDS = 900.0


class ConcurrencyLimitError(RuntimeError):
    """More evaluations would run at once than the service limit allows."""


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


@dataclass
class PipelineExecutionStatus:
    overall_status: str
    step_details: list[StepDetail] = field(default_factory=list)
    failure_reason: str | None = None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


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
    _backend: Backend | None = field(default=None, repr=False, compare=False)
    _clock: Clock = field(default=time, repr=False, compare=False)  # type: ignore[assignment]

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
            _backend=backend,
        )

    @classmethod
    def get(
        cls, pipeline_execution_arn: str, session: Any = None, region: str | None = None
    ) -> EvaluationPipelineExecution:
        backend = resolve_backend(session, region)
        desc = backend.client.describe_pipeline_execution(PipelineExecutionArn=pipeline_execution_arn)
        pipeline_name = desc["PipelineArn"].rsplit("/", 1)[-1]
        return cls._from_summary(backend, desc, pipeline_name)

    @classmethod
    def get_all(
        cls, eval_type: str | None = None, session: Any = None, region: str | None = None
    ) -> list[EvaluationPipelineExecution]:
        """Executions of ``eval_type`` (every kind when None), newest first."""
        backend = resolve_backend(session, region)
        kinds = [check_eval_type(eval_type)] if eval_type else list(EVAL_TYPES)
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
        pipeline = backend.pipeline_name(check_eval_type(eval_type), pipeline_name)
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
        eval_type = check_eval_type(eval_type)
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
        """DescribePipelineExecution: update ``status``, ``failure_reason`` and ``creation_time``."""
        desc = self.backend.client.describe_pipeline_execution(PipelineExecutionArn=self.arn)
        self.status = desc["PipelineExecutionStatus"]
        self.failure_reason = desc.get("FailureReason") or None
        self.creation_time = desc.get("CreationTime", self.creation_time)

    def wait(
        self,
        poll: float = 30,
        timeout: float | None = None,
        *,
        progress: Callable[[EvaluationPipelineExecution], None] | None = None,
    ) -> None:
        """Block until the execution ends. RuntimeError unless it succeeded; TimeoutError after ``timeout`` s.

        ``progress`` is called after every status check (the CLI prints step progress with it).
        """
        if poll <= 0:
            raise ValueError(f"poll: must be positive, got {poll!r}")
        start = self._clock.monotonic()
        interval: float | None = None
        self.refresh()
        if progress is not None:
            progress(self)
        while self.status not in TERMINAL_STATUSES:
            waited = self._clock.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise TimeoutError(f"execution {self.name} ({self.arn}) still {self.status} after {timeout}s")
            interval = next_poll_interval(interval, waited, poll)
            pause = interval if timeout is None else min(interval, timeout - waited)
            self._clock.sleep(pause)
            self.refresh()
            if progress is not None:
                progress(self)
        if self.status != "Succeeded":
            raise RuntimeError(f"execution {self.name} ({self.arn}) {self.status}: {self.failure_reason}")

    def stop(self) -> None:
        """StopPipelineExecution (ClientError when it has already ended), then refresh."""
        self.backend.client.stop_pipeline_execution(
            # A fresh token: after a retry(), stopping again is a new request, not a repeat of the first.
            PipelineExecutionArn=self.arn, ClientRequestToken=_token("stop", self.arn, uuid.uuid4().hex)
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
                    )
                )
        return steps

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
