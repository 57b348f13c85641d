"""Start an evaluation from a validated spec as a pipeline execution.

``start_evaluation`` validates every input first (bad input raises ValueError and writes nothing),
then writes ``spec.json`` and any attachments to ``<s3_output_path>/<execution name>/`` and starts
the kind's pipeline with ``SpecUri``, ``OutputPath`` and ``EvaluateBaseModel``. The results appear
under ``<s3_output_path>/<execution name>/<pipeline execution id>/``. On the local backend the
pipeline is created (or updated) from the definition builder first; on SageMaker it is the one the
stack deployed. A start the backend rejects (the concurrency limit, a validation error) removes
what was written for it, so no orphan ``spec.json`` folder is left behind.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError, ParamValidationError

from evalstack import storage
from evalstack.catalog.limits import MAX_INSTANCE_COUNT, MAX_PIPELINE_PARAMETER_CHARS
from evalstack.engine.tasks import build_task, model_reference
from evalstack.masking import mask
from evalstack.models.reference import label_error, parse_model_reference
from evalstack.pipeline.definition import (
    EVALUATE_BASE_MODEL,
    INSTANCE_COUNT,
    INSTANCE_TYPE,
    PROCESSING_IMAGE_URI,
    SPEC_URI,
    NetworkConfig,
    build_definition,
)
from evalstack.runtime.backend import LOCAL_IMAGE_URI, LOCAL_ROLE_ARN, Backend, resolve_backend
from evalstack.runtime.execution import ConcurrencyLimitError, EvaluationPipelineExecution
from evalstack.spec import EvaluationSpec
from evalstack.task import StreamingTask

# PipelineExecutionDisplayName: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}
_DISPLAY_NAME_CHARS = 82


@dataclass(frozen=True)
class Attachment:
    """A file the steps need beside the spec (e.g. a pickled scorer); ``spec_field`` gets its URI."""

    name: str
    data: bytes
    spec_field: str


def execution_name(spec: EvaluationSpec) -> str:
    """``<spec name>-<UTC time>-<random>``, cleaned to what SageMaker allows as a display name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    suffix = f"-{stamp}-{uuid.uuid4().hex[:8]}"
    base = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]+", "-", mask(spec.name))).strip("-") or "evaluation"
    return base[: _DISPLAY_NAME_CHARS - len(suffix)].rstrip("-") + suffix


def validate_inputs(spec: EvaluationSpec) -> None:
    """Read (and so validate) every input, and check each model that will be called names a backend.

    Runs before anything is written, so bad input raises here and leaves no output behind.
    """
    for role in ("candidate", "base") if spec.evaluate_base_model else ("candidate",):
        task = build_task(spec, role)
        if isinstance(task, StreamingTask):
            # One pass without holding the records; a large JSON Lines file is parsed on every core when that
            # is safe in this process (see evalstack.data.block_pool.spawn_is_safe).
            task.item_count()
        else:
            task.items()
        reference = parse_model_reference(model_reference(spec, role))
        if task.needs_model and reference.is_label:
            raise label_error(reference)


def local_definition(spec: EvaluationSpec, networking: Any = None) -> dict[str, Any]:
    """The definition the local backend runs for ``spec``: the builder's, with local defaults."""
    network = (
        NetworkConfig(subnets=list(networking.subnets), security_group_ids=list(networking.security_group_ids))
        if networking is not None
        else None
    )
    definition = build_definition(spec.eval_type, role_arn=LOCAL_ROLE_ARN, kms_key_id=spec.kms_key_id, network=network)
    for parameter in definition["Parameters"]:
        if parameter["Name"] == PROCESSING_IMAGE_URI:
            parameter["DefaultValue"] = LOCAL_IMAGE_URI
    return definition


def check_instance_count(value: Any) -> None:
    """1-100, SageMaker's range for a Processing job; the local backend queues what it cannot run at once."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INSTANCE_COUNT:
        raise ValueError(
            f"instance_count: must be an integer from 1 to {MAX_INSTANCE_COUNT} "
            f"(SageMaker's limit for a Processing job), got {value!r}"
        )


def _write_inputs(backend: Backend, spec: EvaluationSpec, prefix: str, attachments: Sequence[Attachment]) -> list[str]:
    """Write the attachments and spec.json under ``prefix``; returns the URIs written."""
    written: list[str] = []
    try:
        for attachment in attachments:
            uri = storage.join(prefix, attachment.name)
            backend.write_bytes(uri, attachment.data, spec.kms_key_id)
            written.append(uri)
            spec = dataclasses.replace(spec, **{attachment.spec_field: uri})
        uri = storage.join(prefix, "spec.json")
        backend.write_bytes(uri, spec.to_json().encode("utf-8"), spec.kms_key_id)
        written.append(uri)
    except BaseException:
        backend.delete(written)
        raise
    return written


def start_evaluation(
    spec: EvaluationSpec,
    *,
    s3_output_path: str | None = None,
    attachments: Sequence[Attachment] = (),
    region: str | None = None,
    session: Any = None,
    networking: Any = None,
    pipeline_name: str | None = None,
    instance_count: int | None = None,
    instance_type: str | None = None,
) -> EvaluationPipelineExecution:
    validate_inputs(spec)
    if instance_count is not None:
        check_instance_count(instance_count)
    output = storage.absolute(s3_output_path, "s3_output_path") if s3_output_path else None
    backend = resolve_backend(session, region)
    pipeline = backend.pipeline_name(spec.eval_type, pipeline_name)
    name = execution_name(spec)
    prefix = storage.join(output or backend.default_output_path(), name)
    parameters: dict[str, Any] = {
        SPEC_URI: storage.join(prefix, "spec.json"),
        EVALUATE_BASE_MODEL: spec.evaluate_base_model,
    }
    if instance_count is not None:
        parameters[INSTANCE_COUNT] = instance_count
    if instance_type is not None:
        parameters[INSTANCE_TYPE] = instance_type
    for key, value in parameters.items():
        if isinstance(value, str) and len(value) > MAX_PIPELINE_PARAMETER_CHARS:
            raise ValueError(
                f"{key}: {len(value)} characters; SageMaker pipeline parameters hold at most "
                f"{MAX_PIPELINE_PARAMETER_CHARS} (use a shorter s3_output_path or evaluation name)"
            )
    written = _write_inputs(backend, spec, prefix, attachments)
    try:
        if backend.is_local:
            return EvaluationPipelineExecution.start(
                spec.eval_type,
                name,
                local_definition(spec, networking),
                LOCAL_ROLE_ARN,
                prefix,
                session,
                region,
                parameters=parameters,
                pipeline_name=pipeline,
            )
        # The deployed pipeline already carries the stack's image, role, key and network.
        return EvaluationPipelineExecution._launch(backend, spec.eval_type, pipeline, name, prefix, parameters)
    except (ConcurrencyLimitError, ClientError, ParamValidationError, ValueError):
        # The backend answered no: nothing started that could read these inputs. (A lost connection
        # is not in this list: the start may have happened, and its inputs must stay.)
        backend.delete(written)
        raise
