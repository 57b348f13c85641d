"""EvaluationPipelineExecution and its status types, as in the reference API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evalstack import storage

TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")


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


@dataclass
class EvaluationPipelineExecution:
    """One evaluation run. ``s3_output_path`` is where its results.json and friends live."""

    name: str
    arn: str
    status: str
    eval_type: str
    s3_output_path: str
    creation_time: datetime
    failure_reason: str | None = None
    steps: list[StepDetail] = field(default_factory=list)

    def refresh(self) -> None:
        """In-process executions are finished when returned; nothing to fetch."""

    def wait(self, poll: int = 30, timeout: int | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"execution {self.name} still {self.status} after {timeout}s")
            time.sleep(min(poll, 1))
            self.refresh()
        if self.status != "Succeeded":
            raise RuntimeError(f"execution {self.name} {self.status}: {self.failure_reason}")

    def stop(self) -> None:
        if self.status in TERMINAL_STATUSES:
            raise RuntimeError(f"execution {self.name} already {self.status}")

    def get_status(self) -> PipelineExecutionStatus:
        return PipelineExecutionStatus(self.status, list(self.steps), self.failure_reason)

    def results(self) -> dict[str, Any]:
        """results.json, plus comparison.json under "comparison" when the base model was evaluated."""
        out = json.loads(storage.read_text(storage.join(self.s3_output_path, "results.json")))
        comparison = storage.join(self.s3_output_path, "comparison.json")
        if storage.exists(comparison):
            out["comparison"] = json.loads(storage.read_text(comparison))
        return out
