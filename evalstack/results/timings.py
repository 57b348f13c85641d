"""Step times recorded by the steps themselves, so the Report step can show them.

A Processing job's role has data rights only (no ListPipelineExecutionSteps), so each evaluate step
writes ``timings/<role>-shard-<i>-of-<n>.json`` under the execution's output when it ends, and the
report reads them. The viewer shows the backend's own step list instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from evalstack import storage

_TIMING_NAME = re.compile(r"/timings/[a-z]+-shard-\d{5}-of-\d{5}\.json$")


@dataclass
class StepTime:
    name: str
    status: str | None = None
    start_time: str | None = None
    end_time: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def timing_uri(output_uri: str, role: str, index: int, count: int) -> str:
    return storage.join(output_uri, "timings", f"{role}-shard-{index:05d}-of-{count:05d}.json")


def record_step_time(
    output_uri: str, role: str, index: int, count: int, start: datetime, end: datetime, kms_key_id: str | None = None
) -> None:
    name = ("EvaluateModel" if role == "candidate" else "EvaluateBaseModel") + (
        f" shard {index + 1}/{count}" if count > 1 else ""
    )
    step = StepTime(name, "Succeeded", start.isoformat(), end.isoformat())
    uri = timing_uri(output_uri, role, index, count)
    storage.write_text_keeping_first(uri, json.dumps(asdict(step)), kms_key_id=kms_key_id)


def recorded_step_times(output_uri: str) -> list[StepTime]:
    """Every recorded step, by start time; a temporary file of a write in progress is skipped."""
    steps = [
        StepTime(**json.loads(storage.read_text(uri)))
        for uri in storage.list_uris(storage.join(output_uri, "timings"))
        if _TIMING_NAME.search(uri)
    ]
    return sorted(steps, key=lambda s: (s.start_time or "", s.name))
