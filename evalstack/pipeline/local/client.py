"""``LocalSageMakerClient``: the SageMaker Pipelines API of boto3's ``sagemaker`` client, run locally.

Same method names, parameters, response shapes and errors (``botocore.exceptions.ClientError`` with
the service's codes, ``ParamValidationError`` for malformed requests, because every request is
validated against botocore's own SageMaker service model), so the runtime has one code path for
``boto3.client("sagemaker")`` and this::

    client = LocalSageMakerClient()                      # state in $EVALSTACK_HOME/pipelines.sqlite
    client.create_pipeline(PipelineName="bench", PipelineDefinition=definition_json("benchmark"),
                           RoleArn="arn:aws:iam::000000000000:role/local")
    arn = client.start_pipeline_execution(PipelineName="bench", PipelineParameters=[...])["PipelineExecutionArn"]

Executions run in a detached runner process (:mod:`evalstack.pipeline.local.runner`); their state
lives in SQLite and survives client restarts. A runner that died (kill -9, crash) is noticed by
its pid and heartbeat file: the execution reads Failed, and ``retry_pipeline_execution`` resumes it,
unless the files the runner left (its outcome, the steps' completion records) show it had finished:
then the execution reads as it ended.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import string
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.errorfactory import ClientExceptionsFactory
from botocore.exceptions import ClientError, ParamValidationError
from botocore.model import ServiceModel
from botocore.paginate import Paginator
from botocore.utils import parse_timestamp
from botocore.validate import ParamValidator

from evalstack import storage
from evalstack.pipeline.definition import iter_steps
from evalstack.pipeline.local import service_model, standby
from evalstack.pipeline.local.runner import Runner, kill_process_groups, runs_warm
from evalstack.pipeline.local.store import ACTIVE_STATUSES, Store

MAX_CONCURRENT_EXECUTIONS = 10  # SageMaker's per-account default, applied per EVALSTACK_HOME
HEARTBEAT_TIMEOUT_ENV = "EVALSTACK_HEARTBEAT_TIMEOUT"
HEARTBEAT_TIMEOUT_SECONDS = 30.0
STARTUP_GRACE_SECONDS = 60.0
DEFAULT_PAGE_SIZE = 50


def _service_model() -> ServiceModel:
    return service_model.models()[0]


def _utc(value: Any) -> datetime | None:
    """A timestamp as botocore sends it: datetimes (naive ones as UTC), ISO strings or epoch seconds."""
    if value is None:
        return None
    stamp = value if isinstance(value, datetime) else parse_timestamp(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state not in ("Z", "X")  # a zombie has died; only its exit status is left


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _page_offset(token: str | None, operation: str) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{operation}: invalid NextToken") from err


def _parse_definition(text: str) -> dict[str, Any]:
    definition = json.loads(text)
    if not isinstance(definition, dict) or "Steps" not in definition:
        raise ValueError("the pipeline definition must be a JSON object with Steps")
    names = [s["Name"] for s in iter_steps(definition["Steps"])]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate step names {duplicates}")
    return definition


class LocalSageMakerClient:
    """The pipeline operations of ``boto3.client("sagemaker")``, executed on this machine.

    ``home`` defaults to ``$EVALSTACK_HOME`` (``~/.evalstack``); runners and step processes get it
    as their ``EVALSTACK_HOME``, so ``s3://`` outputs land in ``<home>/s3`` unless AWS is configured.
    """

    def __init__(
        self, home: str | Path | None = None, *, region_name: str = "us-east-1", account_id: str = "000000000000"
    ):
        self._home_path = storage.absolute_path(str(home)) if home is not None else storage.evalstack_home()
        self.store = Store(self._home_path / "pipelines.sqlite")
        self.region_name = region_name
        self.account_id = account_id
        self.exceptions = ClientExceptionsFactory().create_client_exceptions(_service_model())

    # Plumbing -----------------------------------------------------------------------------------

    def _request(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate ``params`` as boto3 would, filling idempotency tokens the way botocore does."""
        op = _service_model().operation_model(operation)
        params = dict(params)
        for name, member in op.input_shape.members.items():
            if member.metadata.get("idempotencyToken") and name not in params:
                params[name] = str(uuid.uuid4())
        report = ParamValidator().validate(params, op.input_shape)
        if report.has_errors():
            raise ParamValidationError(report=report.generate_report())
        return params

    def _error(self, code: str, message: str, operation: str) -> ClientError:
        response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return self.exceptions.from_code(code)(response, operation)

    @staticmethod
    def _ok(body: dict[str, Any]) -> dict[str, Any]:
        body["ResponseMetadata"] = {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": 200,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        }
        return body

    def _pipeline_arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region_name}:{self.account_id}:pipeline/{name.lower()}"

    def _pipeline(self, name: str, operation: str) -> Any:
        row = self.store.transaction(
            lambda db: db.execute("SELECT * FROM pipelines WHERE name = ?", (name,)).fetchone()
        )
        if row is None:
            raise self._error("ResourceNotFound", f"Pipeline '{name}' does not exist.", operation)
        return row

    def _execution(self, arn: str, operation: str) -> Any:
        self._reap_if_dead(arn)
        row = self.store.execution(arn)
        if row is None:
            raise self._error("ResourceNotFound", f"Pipeline execution '{arn}' does not exist.", operation)
        return row

    def _definition(self, params: dict[str, Any], operation: str) -> str:
        text = params.get("PipelineDefinition")
        location = params.get("PipelineDefinitionS3Location")
        if location is not None:
            text = storage.read_text(f"s3://{location['Bucket']}/{location['ObjectKey']}")
        if text is None:
            raise self._error(
                "ValidationException", "PipelineDefinition or PipelineDefinitionS3Location is required", operation
            )
        try:
            _parse_definition(text)
        except (ValueError, KeyError, TypeError) as err:
            raise self._error("ValidationException", f"Unable to parse pipeline definition: {err}", operation) from err
        return text

    # Pipelines ----------------------------------------------------------------------------------

    def create_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        params = self._request("CreatePipeline", kwargs)
        name = params["PipelineName"]
        definition = self._definition(params, "CreatePipeline")
        now = time.time()

        def create(db: Any) -> None:
            if db.execute("SELECT 1 FROM pipelines WHERE name = ?", (name,)).fetchone():
                raise self._error(
                    "ValidationException", f"Pipeline names must be unique: '{name}' already exists", "CreatePipeline"
                )
            db.execute(
                "INSERT INTO pipelines (name, arn, display_name, description, definition, role_arn, parallelism,"
                " created, modified) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    self._pipeline_arn(name),
                    params.get("PipelineDisplayName", name),
                    params.get("PipelineDescription"),
                    definition,
                    params["RoleArn"],
                    params.get("ParallelismConfiguration", {}).get("MaxParallelExecutionSteps"),
                    now,
                    now,
                ),
            )

        self.store.transaction(create, write=True)
        return self._ok({"PipelineArn": self._pipeline_arn(name)})

    def update_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        params = self._request("UpdatePipeline", kwargs)
        name = params["PipelineName"]
        self._pipeline(name, "UpdatePipeline")
        fields: dict[str, Any] = {"modified": time.time()}
        if "PipelineDefinition" in params or "PipelineDefinitionS3Location" in params:
            fields["definition"] = self._definition(params, "UpdatePipeline")
        for key, col in (
            ("PipelineDisplayName", "display_name"),
            ("PipelineDescription", "description"),
            ("RoleArn", "role_arn"),
        ):
            if key in params:
                fields[col] = params[key]
        if "ParallelismConfiguration" in params:
            fields["parallelism"] = params["ParallelismConfiguration"]["MaxParallelExecutionSteps"]
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.store.transaction(
            lambda db: db.execute(f"UPDATE pipelines SET {cols} WHERE name = ?", (*fields.values(), name)), write=True
        )
        return self._ok({"PipelineArn": self._pipeline_arn(name)})

    def describe_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        params = self._request("DescribePipeline", kwargs)
        row = self._pipeline(params["PipelineName"], "DescribePipeline")
        body: dict[str, Any] = {
            "PipelineArn": row["arn"],
            "PipelineName": row["name"],
            "PipelineDisplayName": row["display_name"],
            "PipelineDefinition": row["definition"],
            "RoleArn": row["role_arn"],
            "PipelineStatus": "Active",
            "CreationTime": _time(row["created"]),
            "LastModifiedTime": _time(row["modified"]),
            "CreatedBy": {},
            "LastModifiedBy": {},
        }
        if row["description"]:
            body["PipelineDescription"] = row["description"]
        if row["last_run"]:
            body["LastRunTime"] = _time(row["last_run"])
        if row["parallelism"]:
            body["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": row["parallelism"]}
        return self._ok(body)

    # Executions ---------------------------------------------------------------------------------

    def _parameters(self, definition: dict[str, Any], given: list[dict[str, str]]) -> dict[str, Any]:
        declared = {p["Name"]: p for p in definition.get("Parameters", [])}
        values: dict[str, Any] = {n: p["DefaultValue"] for n, p in declared.items() if "DefaultValue" in p}
        for item in given:
            name, raw = item["Name"], item["Value"]
            if name not in declared:
                raise ValueError(f"PipelineParameters: unknown parameter '{name}'; declared: {sorted(declared)}")
            kind = declared[name].get("Type", "String")
            try:
                if kind == "Integer":
                    values[name] = int(raw)
                elif kind == "Float":
                    values[name] = float(raw)
                elif kind == "Boolean":
                    if raw.lower() not in ("true", "false"):
                        raise ValueError("expected true or false")
                    values[name] = raw.lower() == "true"
                else:
                    values[name] = raw
            except ValueError as err:
                raise ValueError(f"PipelineParameters: '{name}' is a {kind}, got {raw!r} ({err})") from err
        missing = sorted(set(declared) - set(values))
        if missing:
            raise ValueError(f"PipelineParameters: no value and no default for {missing}")
        return values

    def _spawn_runner(self, arn: str, definition: dict[str, Any]) -> None:
        log = self.store.execution_dir(arn) / "runner.log"
        if standby.hand_over(self._home_path, arn, log):
            return
        try:
            self._launch_runner(arn, log, warm_steps=runs_warm(iter_steps(definition["Steps"])))
        except (OSError, subprocess.CalledProcessError) as err:
            self.store.finish_execution(arn, "Failed", f"could not start the local pipeline runner: {err}")
            raise

    def _launch_runner(self, arn: str, log: Path, *, warm_steps: bool) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            subprocess.run(
                standby.runner_command(*(["--warm"] if warm_steps else []), arn),
                env=standby.runner_environment(self._home_path),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def _check_capacity(self, db: Any, operation: str) -> None:
        placeholders = ", ".join("?" for _ in ACTIVE_STATUSES)
        (active,) = db.execute(
            f"SELECT COUNT(*) FROM executions WHERE status IN ({placeholders})",
            ACTIVE_STATUSES,
        ).fetchone()
        if active >= MAX_CONCURRENT_EXECUTIONS:
            raise self._error(
                "ResourceLimitExceeded",
                f"At most {MAX_CONCURRENT_EXECUTIONS} pipeline executions can run at once "
                f"(per EVALSTACK_HOME {self._home_path}); {active} are executing. Wait for one to finish or stop one.",
                operation,
            )

    def start_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        operation = "StartPipelineExecution"
        params = self._request(operation, kwargs)
        name = params["PipelineName"]
        pipeline = self._pipeline(name, operation)
        token = params["ClientRequestToken"]
        definition = json.loads(pipeline["definition"])
        try:
            values = self._parameters(definition, params.get("PipelineParameters", []))
        except ValueError as err:
            raise self._error("ValidationException", str(err), operation) from err
        self.reap_dead_runners()
        now = time.time()
        exec_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
        arn = f"{pipeline['arn']}/execution/{exec_id}"
        parallelism = params.get("ParallelismConfiguration", {}).get(
            "MaxParallelExecutionSteps", pipeline["parallelism"]
        )

        def insert(db: Any) -> str | None:
            existing = db.execute(
                "SELECT arn FROM executions WHERE pipeline_name = ? AND client_token = ?", (name, token)
            ).fetchone()
            if existing is not None:
                return str(existing["arn"])
            self._check_capacity(db, operation)
            db.execute(
                "INSERT INTO executions (arn, pipeline_name, display_name, description, status, parameters,"
                " definition, parallelism, client_token, created, modified, heartbeat)"
                " VALUES (?, ?, ?, ?, 'Executing', ?, ?, ?, ?, ?, ?, ?)",
                (
                    arn,
                    name,
                    params.get("PipelineExecutionDisplayName", f"execution-{int(now * 1000)}"),
                    params.get("PipelineExecutionDescription"),
                    json.dumps(values),
                    pipeline["definition"],
                    parallelism,
                    token,
                    now,
                    now,
                    now,
                ),
            )
            db.execute("UPDATE pipelines SET last_run = ? WHERE name = ?", (now, name))
            return None

        existing = self.store.transaction(insert, write=True)
        if existing is not None:
            return self._ok({"PipelineExecutionArn": existing})
        self._spawn_runner(arn, definition)
        return self._ok({"PipelineExecutionArn": arn})

    def describe_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        params = self._request("DescribePipelineExecution", kwargs)
        row = self._execution(params["PipelineExecutionArn"], "DescribePipelineExecution")
        body: dict[str, Any] = {
            "PipelineArn": row["arn"].split("/execution/")[0],
            "PipelineExecutionArn": row["arn"],
            "PipelineExecutionDisplayName": row["display_name"],
            "PipelineExecutionStatus": row["status"],
            "PipelineExperimentConfig": {
                "ExperimentName": row["pipeline_name"],
                "TrialName": row["arn"].rsplit("/", 1)[-1],
            },
            "CreationTime": _time(row["created"]),
            "LastModifiedTime": _time(row["modified"]),
            "CreatedBy": {},
            "LastModifiedBy": {},
        }
        if row["description"]:
            body["PipelineExecutionDescription"] = row["description"]
        if row["failure_reason"]:
            body["FailureReason"] = row["failure_reason"]
        if row["parallelism"]:
            body["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": row["parallelism"]}
        return self._ok(body)

    def list_pipeline_executions(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListPipelineExecutions"
        params = self._request(operation, kwargs)
        self._pipeline(params["PipelineName"], operation)
        self.reap_dead_runners()
        rows = self.store.transaction(
            lambda db: db.execute(
                "SELECT * FROM executions WHERE pipeline_name = ?", (params["PipelineName"],)
            ).fetchall()
        )
        # botocore accepts datetimes (naive = UTC), ISO strings and epoch numbers; compare them as it sends them.
        after, before = (_utc(params.get(k)) for k in ("CreatedAfter", "CreatedBefore"))
        if after is not None:
            rows = [r for r in rows if _time(r["created"]) > after]
        if before is not None:
            rows = [r for r in rows if _time(r["created"]) < before]
        key = "arn" if params.get("SortBy") == "PipelineExecutionArn" else "created"
        rows.sort(key=lambda r: (r[key], r["arn"]), reverse=params.get("SortOrder", "Descending") == "Descending")
        page, token = self._page(rows, params, operation)
        summaries = []
        for row in page:
            summary = {
                "PipelineExecutionArn": row["arn"],
                "StartTime": _time(row["created"]),
                "PipelineExecutionStatus": row["status"],
                "PipelineExecutionDisplayName": row["display_name"],
            }
            if row["description"]:
                summary["PipelineExecutionDescription"] = row["description"]
            if row["failure_reason"]:
                summary["PipelineExecutionFailureReason"] = row["failure_reason"]
            summaries.append(summary)
        body: dict[str, Any] = {"PipelineExecutionSummaries": summaries}
        if token:
            body["NextToken"] = token
        return self._ok(body)

    def list_pipeline_execution_steps(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListPipelineExecutionSteps"
        params = self._request(operation, kwargs)
        arn = params.get("PipelineExecutionArn")
        if not arn:
            raise self._error("ValidationException", "PipelineExecutionArn is required", operation)
        self._execution(arn, operation)
        rows = self.store.steps(arn)
        rows.sort(key=lambda r: (r["start"], r["name"]), reverse=params.get("SortOrder", "Descending") == "Descending")
        page, token = self._page(rows, params, operation)
        steps = []
        for row in page:
            item: dict[str, Any] = {
                "StepName": row["name"],
                "StepDisplayName": row["name"],
                "StartTime": _time(row["start"]),
                "StepStatus": row["status"],
                "Metadata": json.loads(row["metadata"]),
                "AttemptCount": row["attempt"],
            }
            if row["end"] is not None:
                item["EndTime"] = _time(row["end"])
            if row["failure_reason"]:
                item["FailureReason"] = row["failure_reason"]
            steps.append(item)
        body: dict[str, Any] = {"PipelineExecutionSteps": steps}
        if token:
            body["NextToken"] = token
        return self._ok(body)

    def _page(self, rows: list[Any], params: dict[str, Any], operation: str) -> tuple[list[Any], str | None]:
        try:
            offset = _page_offset(params.get("NextToken"), operation)
        except ValueError as err:
            raise self._error("ValidationException", str(err), operation) from err
        size = params.get("MaxResults", DEFAULT_PAGE_SIZE)
        end = offset + size
        return rows[offset:end], (_page_token(end) if end < len(rows) else None)

    def stop_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        operation = "StopPipelineExecution"
        params = self._request(operation, kwargs)
        arn = params["PipelineExecutionArn"]
        # The runner sees the request, terminates the step processes and records Stopped.
        if self.store.request_stop(arn):
            return self._ok({"PipelineExecutionArn": arn})
        row = self._execution(arn, operation)
        if row["status"] == "Stopping":
            return self._ok({"PipelineExecutionArn": arn})
        raise self._error(
            "ValidationException",
            f"Pipeline execution is {row['status']}; only an executing one can be stopped.",
            operation,
        )

    def retry_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        operation = "RetryPipelineExecution"
        params = self._request(operation, kwargs)
        arn = params["PipelineExecutionArn"]
        self._execution(arn, operation)  # ResourceNotFound for an unknown execution
        fields: dict[str, Any] = {
            "status": "Executing",
            "failure_reason": None,
            "stop_requested": 0,
            "runner_pid": None,
            "heartbeat": time.time(),
            "modified": time.time(),
        }
        if "ParallelismConfiguration" in params:
            fields["parallelism"] = params["ParallelismConfiguration"]["MaxParallelExecutionSteps"]
        self.reap_dead_runners()
        cols = ", ".join(f"{k} = ?" for k in fields)

        def reset(db: Any) -> None:
            # Checked again inside the write transaction: two retries at once start one runner.
            (status,) = db.execute("SELECT status FROM executions WHERE arn = ?", (arn,)).fetchone()
            if status not in ("Failed", "Stopped"):
                raise self._error(
                    "ValidationException",
                    f"Pipeline execution is {status}; only a failed or stopped one can be retried.",
                    operation,
                )
            self._check_capacity(db, operation)
            # Succeeded steps keep their properties and are not run again.
            db.execute("DELETE FROM steps WHERE execution_arn = ? AND status != 'Succeeded'", (arn,))
            db.execute(f"UPDATE executions SET {cols} WHERE arn = ?", (*fields.values(), arn))

        self.store.transaction(reset, write=True)
        self.store.clear_outcome(arn)  # the last run's verdict; this run writes its own
        self._spawn_runner(arn, json.loads(self.store.execution(arn)["definition"]))
        return self._ok({"PipelineExecutionArn": arn})

    # Dead runners -------------------------------------------------------------------------------

    def _runner_dead(self, row: Any) -> bool:
        # The heartbeat file is what a live runner keeps fresh; the database stamp covers the start.
        last = max(row["heartbeat"] or row["created"], self.store.last_beat(row["arn"]) or 0.0)
        age = time.time() - last
        if row["runner_pid"] is None:
            return age > STARTUP_GRACE_SECONDS
        timeout = storage.env_number(HEARTBEAT_TIMEOUT_ENV, HEARTBEAT_TIMEOUT_SECONDS)
        return not _pid_alive(row["runner_pid"]) or age > timeout

    def _reap_if_dead(self, arn: str) -> None:
        row = self.store.execution(arn)
        if row is None or row["status"] not in ACTIVE_STATUSES or not self._runner_dead(row):
            return
        # The runner is gone: end its step processes so nothing keeps writing, and say why.
        for step in self.store.steps(arn):
            if step["status"] in ("Starting", "Executing", "Stopping"):
                kill_process_groups(json.loads(step["pids"]), signal.SIGKILL)
        if row["stop_requested"]:
            self.store.end_running_steps(arn, "Stopped", "The execution was stopped")
            self.store.finish_execution(arn, "Stopped", None)
            return
        if Runner(self.store, arn).reconcile():
            return  # it had finished: its outcome or its steps' completion records say how
        reason = (
            f"The local pipeline runner (pid {row['runner_pid']}) stopped without finishing the execution; "
            f"see {self.store.execution_dir(arn) / 'runner.log'}. "
            "Retry the execution to resume it."
        )
        self.store.end_running_steps(arn, "Failed", "The local pipeline runner died")
        self.store.finish_execution(arn, "Failed", reason)

    def reap_dead_runners(self) -> None:
        """Mark executions whose runner died as Failed (called before listing and counting)."""
        placeholders = ", ".join("?" for _ in ACTIVE_STATUSES)
        rows = self.store.transaction(
            lambda db: db.execute(
                f"SELECT arn FROM executions WHERE status IN ({placeholders})", ACTIVE_STATUSES
            ).fetchall()
        )
        arns = [r["arn"] for r in rows]
        for arn in arns:
            self._reap_if_dead(arn)

    # boto3 client conveniences ------------------------------------------------------------------

    def can_paginate(self, operation_name: str) -> bool:
        return operation_name in ("list_pipeline_executions", "list_pipeline_execution_steps")

    def get_paginator(self, operation_name: str) -> Paginator:
        if not self.can_paginate(operation_name):
            raise ValueError(f"operation {operation_name!r} cannot be paginated by the local client")
        op_name = "".join(part.capitalize() for part in operation_name.split("_"))
        return Paginator(
            getattr(self, operation_name),
            service_model.models()[1].get_paginator(op_name),
            _service_model().operation_model(op_name),
        )
