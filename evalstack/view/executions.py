"""What the viewer shows, read through the runtime client: executions of the current backend and their files.

Results are read with :mod:`evalstack.storage`, so ``s3://`` outputs are read with the caller's own
AWS credentials. The files of a finished execution never change, so they are read once and kept.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evalstack import storage
from evalstack.masking import mask
from evalstack.results.html_report import primary_metric
from evalstack.results.tracking import model_version
from evalstack.runtime.execution import TERMINAL_STATUSES, EvaluationPipelineExecution

MIN_COMPARED, MAX_COMPARED = 2, 5
_PACKAGE = re.compile(r":model-package/(?P<group>[^/]+)/(?P<version>\d+)$")


class NotFound(LookupError):
    """No such execution, file or page."""


@dataclass
class ExecutionFiles:
    """results.json, comparison.json, base/results.json and spec.json of one execution (None when absent)."""

    results: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    base_results: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None


@dataclass
class ExecutionView:
    execution: EvaluationPipelineExecution
    files: ExecutionFiles = field(default_factory=ExecutionFiles)

    @property
    def id(self) -> str:
        return self.execution.arn.rsplit("/", 1)[-1]

    @property
    def model(self) -> str:
        found = (self.files.results or {}).get("model") or (self.files.spec or {}).get("model") or ""
        return mask(str(found))

    @property
    def benchmark(self) -> str | None:
        details = (self.files.results or {}).get("details") or {}
        return details.get("benchmark") or (self.files.spec or {}).get("benchmark")

    @property
    def primary(self) -> tuple[str | None, float | None]:
        results = self.files.results or {}
        name = primary_metric(results)
        value = (results.get("metrics") or {}).get(name) if name else None
        return name, float(value) if isinstance(value, int | float) else None

    @property
    def package_group(self) -> str | None:
        match = _PACKAGE.search(str((self.files.spec or {}).get("model") or ""))
        return (self.files.spec or {}).get("model_package_group") or (match["group"] if match else None)

    @property
    def package_version(self) -> int | None:
        return model_version(str((self.files.spec or {}).get("model") or ""))

    @property
    def created(self) -> str:
        created = self.execution.creation_time
        return created.isoformat(timespec="seconds") if isinstance(created, datetime) else "-"


def _read_json(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def read_files(output: str) -> ExecutionFiles:
    if not output:
        return ExecutionFiles()
    return ExecutionFiles(
        results=_read_json(storage.join(output, "results.json")),
        comparison=_read_json(storage.join(output, "comparison.json")),
        base_results=_read_json(storage.join(output, "base", "results.json")),
        spec=_read_json(storage.join(output, "spec.json")),
    )


@dataclass
class Filters:
    eval_type: str = ""
    model: str = ""
    status: str = ""

    def matches(self, view: ExecutionView) -> bool:
        status = {"completed": "succeeded"}.get(self.status.lower(), self.status.lower())
        return (
            (not self.eval_type or view.execution.eval_type == self.eval_type)
            and (not status or str(view.execution.status).lower() == status)
            and (not self.model or self.model.lower() in view.model.lower())
        )


class Executions:
    """The current backend's executions, listed afresh on each call; finished executions' files cached."""

    def __init__(self, list_executions: Callable[[], list[EvaluationPipelineExecution]]) -> None:
        self._list = list_executions
        self._files: dict[str, ExecutionFiles] = {}
        self._lock = threading.Lock()

    def _files_of(self, execution: EvaluationPipelineExecution) -> ExecutionFiles:
        with self._lock:
            cached = self._files.get(execution.arn)
        if cached is not None:
            return cached
        files = read_files(execution.s3_output_path)
        if execution.status in TERMINAL_STATUSES:
            with self._lock:
                self._files[execution.arn] = files
        return files

    def all(self, filters: Filters | None = None) -> list[ExecutionView]:
        views = [ExecutionView(e, self._files_of(e)) for e in self._list()]
        return [v for v in views if filters is None or filters.matches(v)]

    def get(self, execution_id: str) -> ExecutionView:
        for execution in self._list():
            if execution.arn.rsplit("/", 1)[-1] == execution_id:
                return ExecutionView(execution, self._files_of(execution))
        raise NotFound(f"no execution {execution_id!r} on this backend")

    def comparable(self, execution_ids: list[str]) -> list[ExecutionView]:
        """2-5 finished executions of one benchmark, or with one metric set; ValueError says why not."""
        if not MIN_COMPARED <= len(execution_ids) <= MAX_COMPARED:
            raise ValueError(f"compare: choose {MIN_COMPARED} to {MAX_COMPARED} executions, got {len(execution_ids)}")
        if len(set(execution_ids)) != len(execution_ids):
            raise ValueError("compare: an execution is chosen twice")
        views = [self.get(i) for i in execution_ids]
        missing = [v.id for v in views if v.files.results is None]
        if missing:
            raise ValueError(f"compare: no results yet for {', '.join(missing)}")
        benchmarks = {v.benchmark for v in views}
        metric_sets = {frozenset((v.files.results or {}).get("metrics") or {}) for v in views}
        if len(benchmarks) > 1 and len(metric_sets) > 1:
            raise ValueError(
                "compare: the executions share neither a benchmark nor a metric set "
                f"(benchmarks {sorted(str(b) for b in benchmarks)})"
            )
        return views

    def history(self, group: str) -> list[ExecutionView]:
        """Finished executions that evaluated a package of ``group``, oldest first."""
        views = [v for v in self.all() if (v.package_group or "").lower() == group.lower() and v.files.results]
        return sorted(views, key=lambda v: (v.execution.creation_time or datetime.min, v.id))

    def decision(self, view: ExecutionView) -> str:
        """The approval decision: the package's approval status where the backend can describe model
        packages (SageMaker), else the quality gate's outcome from the execution's steps."""
        model = str((view.files.spec or {}).get("model") or "")
        client = view.execution.backend.client
        if view.package_version is not None and hasattr(client, "describe_model_package"):
            package = client.describe_model_package(ModelPackageName=model)
            status = package.get("ModelApprovalStatus", "-")
            reason = package.get("ApprovalDescription")
            return f"{status}: {reason}" if reason else status
        gates = [s for s in view.execution.steps() if s.name.startswith("QualityGate")]
        if any(s.name.endswith("Failed") for s in gates):
            return "Rejected (quality gate failed)"
        if gates:
            return "Passed quality gate" if all(s.status == "Completed" for s in gates) else gates[-1].status
        return "no gate"
