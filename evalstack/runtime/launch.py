"""Start an evaluation from a validated spec as a pipeline execution.

``start_evaluation`` validates every input first (bad input raises ValueError and writes nothing),
then writes ``spec.json`` and any attachments to ``<s3_output_path>/<execution name>/`` and starts
the kind's pipeline with ``SpecUri``, ``OutputPath`` and ``EvaluateBaseModel``. The results appear
under ``<s3_output_path>/<execution name>/<pipeline execution id>/``. On the local backend the
pipeline is created (or updated) from the definition builder first; on SageMaker it is the one the
stack deployed.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evalstack import storage
from evalstack.catalog.limits import MAX_PIPELINE_PARAMETER_CHARS
from evalstack.engine.tasks import build_task, model_reference
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
from evalstack.runtime.execution import EvaluationPipelineExecution
from evalstack.spec import EvaluationSpec

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
    base = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]+", "-", spec.name)).strip("-") or "evaluation"
    return base[: _DISPLAY_NAME_CHARS - len(suffix)].rstrip("-") + suffix


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


def _write_inputs(backend: Backend, spec: EvaluationSpec, prefix: str, attachments: Sequence[Attachment]) -> None:
    for attachment in attachments:
        uri = storage.join(prefix, attachment.name)
        backend.write_bytes(uri, attachment.data, spec.kms_key_id)
        spec = dataclasses.replace(spec, **{attachment.spec_field: uri})
    backend.write_bytes(storage.join(prefix, "spec.json"), spec.to_json().encode("utf-8"), spec.kms_key_id)


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
    backend = resolve_backend(session, region)
    pipeline = backend.pipeline_name(spec.eval_type, pipeline_name)
    name = execution_name(spec)
    prefix = storage.join(s3_output_path or backend.default_output_path(), name)
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
    _write_inputs(backend, spec, prefix, attachments)
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
