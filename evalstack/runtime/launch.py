"""Start an evaluation from a validated spec.

This is the in-process launcher: it validates the inputs, runs the engine in this process and
returns a finished execution. The pipeline backends replace it behind the same function.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evalstack import storage
from evalstack.engine.run import evaluate_in_process
from evalstack.engine.tasks import build_task, model_reference
from evalstack.models.reference import label_error, parse_model_reference
from evalstack.runtime.execution import EvaluationPipelineExecution, StepDetail
from evalstack.spec import EvaluationSpec


@dataclass(frozen=True)
class Attachment:
    """A file the steps need beside the spec (e.g. a pickled scorer); ``spec_field`` gets its URI."""

    name: str
    data: bytes
    spec_field: str


def default_output_path() -> str:
    return str(storage.evalstack_home() / "results")


def _execution_id(spec: EvaluationSpec) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{spec.name}-{stamp}-{uuid.uuid4().hex[:8]}"


def validate_inputs(spec: EvaluationSpec) -> None:
    """Read (and so validate) every input, and check each model that will be called names a backend.

    Runs before anything is written, so bad input raises here and leaves no output behind.
    """
    for role in ("candidate", "base") if spec.evaluate_base_model else ("candidate",):
        task = build_task(spec, role)
        task.items()
        reference = parse_model_reference(model_reference(spec, role))
        if task.needs_model and reference.is_label:
            raise label_error(reference)


def start_evaluation(
    spec: EvaluationSpec,
    *,
    s3_output_path: str | None = None,
    attachments: Sequence[Attachment] = (),
    region: str | None = None,
    session: Any = None,
    networking: Any = None,
) -> EvaluationPipelineExecution:
    execution_id = _execution_id(spec)
    output = storage.join(s3_output_path or default_output_path(), execution_id)
    inputs = storage.join(output, "inputs")
    validate_inputs(spec)
    for attachment in attachments:
        uri = storage.join(inputs, attachment.name)
        storage.write_bytes(uri, attachment.data, kms_key_id=spec.kms_key_id)
        spec = dataclasses.replace(spec, **{attachment.spec_field: uri})
    started = datetime.now(UTC)
    status, reason = "Succeeded", None
    try:
        evaluate_in_process(spec, output)
    except Exception as err:  # noqa: BLE001 - the failure is reported on the execution, as a pipeline would
        status, reason = "Failed", f"{type(err).__name__}: {err}"
    ended = datetime.now(UTC).isoformat()
    step = StepDetail(
        "EvaluateModel",
        "Completed" if status == "Succeeded" else "Failed",
        started.isoformat(),
        ended,
        "Evaluate model",
        reason,
    )
    return EvaluationPipelineExecution(
        name=execution_id,
        arn=f"local:in-process/{execution_id}",
        status=status,
        eval_type=spec.eval_type,
        s3_output_path=output,
        creation_time=started,
        failure_reason=reason,
        steps=[step],
    )
