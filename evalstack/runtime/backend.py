"""Where executions run: the ``local`` embedded backend or ``sagemaker`` (boto3), behind one client.

Both backends are a SageMaker client object: ``boto3.client("sagemaker")`` or
:class:`evalstack.pipeline.local.LocalSageMakerClient`, which has the same methods, parameters,
responses and errors. Everything above this module calls the client the same way.

Choosing the backend:
  ``EVALSTACK_BACKEND=local|sagemaker`` decides when set. Otherwise a ``sagemaker_session`` or
  ``region`` selects SageMaker when evalstack pipelines are deployed there (found as below), and
  everything else runs locally: the embedded default needs no AWS account.

Finding the pipeline of an evaluation kind (benchmark | custom_scorer | llm_as_judge):
  an explicit name, else ``EVALSTACK_PIPELINE_<KIND>`` (e.g. ``EVALSTACK_PIPELINE_CUSTOM_SCORER``),
  else on SageMaker the SSM parameter ``/evalstack/<stage>/pipelines/<eval_type>`` that the CDK
  ``EvaluationPlatform`` writes (stage from ``EVALSTACK_STAGE``, default ``dev``), and locally
  ``evalstack-<kind>`` (created from the definition builder on first use).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from evalstack import storage
from evalstack.catalog.discovery import parameter_name
from evalstack.spec import EVAL_TYPES

BACKEND_ENV = "EVALSTACK_BACKEND"
STAGE_ENV = "EVALSTACK_STAGE"
DEFAULT_STAGE = "dev"
LOCAL_ROLE_ARN = "arn:aws:iam::000000000000:role/evalstack-local"
LOCAL_IMAGE_URI = "local"  # the local runner runs steps with this interpreter; the image is a label


def pipeline_env_var(eval_type: str) -> str:
    return f"EVALSTACK_PIPELINE_{eval_type.upper()}"


def check_eval_type(eval_type: str) -> str:
    value = getattr(eval_type, "value", eval_type)
    if value not in EVAL_TYPES:
        raise ValueError(f"eval_type: must be one of {list(EVAL_TYPES)}, got {eval_type!r}")
    return value


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


@dataclass
class Backend:
    """One backend: its SageMaker(-compatible) client plus what it needs around it.

    ``session`` is a boto3 Session (sagemaker backend) used for SSM and S3; ``None`` locally.
    """

    kind: str
    client: Any
    session: Any = None
    stage: str = DEFAULT_STAGE
    home: Path | None = None
    # Serialises "create/update the pipeline, then start it": executions snapshot the definition
    # at start, so a concurrent update by another thread must not slip in between.
    start_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _names: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def _ssm_value(self, name: str) -> str | None:
        try:
            return self.session.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as err:
            if error_code(err) == "ParameterNotFound":
                return None
            raise

    def find_pipeline(self, eval_type: str) -> str | None:
        """The pipeline name for ``eval_type``, or None when SageMaker has none deployed."""
        eval_type = check_eval_type(eval_type)
        if eval_type not in self._names:
            name = os.environ.get(pipeline_env_var(eval_type))
            if not name and self.is_local:
                name = f"evalstack-{eval_type.replace('_', '-')}"
            if not name:
                name = self._ssm_value(parameter_name(self.stage, "pipelines", eval_type))
            self._names[eval_type] = name
        return self._names[eval_type]

    def pipeline_name(self, eval_type: str, explicit: str | None = None) -> str:
        if explicit:
            return explicit
        name = self.find_pipeline(eval_type)
        if name is None:
            raise ValueError(
                f"no SageMaker pipeline for {eval_type}: deploy the evalstack stack (it writes the SSM parameter "
                f"{parameter_name(self.stage, 'pipelines', eval_type)}), set {pipeline_env_var(eval_type)}, "
                f"or run locally with {BACKEND_ENV}=local"
            )
        return name

    def eval_type_of(self, pipeline_name: str) -> str | None:
        """Which kind a pipeline evaluates, for executions started by something else (e.g. a trigger)."""
        for eval_type in EVAL_TYPES:
            if self.find_pipeline(eval_type) == pipeline_name:
                return eval_type
        return None

    def default_output_path(self) -> str:
        if self.is_local:
            return str(storage.evalstack_home() / "results")
        uri = self._ssm_value(parameter_name(self.stage, "output-uri"))
        if uri is None:
            raise ValueError(
                "s3_output_path: required on SageMaker when the stack's SSM parameter "
                f"{parameter_name(self.stage, 'output-uri')} does not exist"
            )
        return uri

    def write_bytes(self, uri: str, data: bytes, kms_key_id: str | None) -> None:
        """Write an input beside the execution: S3 through this backend's session on SageMaker."""
        if self.is_local:
            storage.write_bytes(uri, data, kms_key_id=kms_key_id)
            return
        if not storage.is_s3(uri):
            raise ValueError(f"s3_output_path: SageMaker steps read their inputs from S3; got {uri!r}")
        loc = storage.parse_s3(uri)
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}
        self.session.client("s3").put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)

    def delete(self, uris: list[str]) -> None:
        """Remove inputs written by :meth:`write_bytes` (a start that was rejected), and a local
        folder they leave empty."""
        for uri in uris:
            if self.is_local:
                storage.delete(uri)
                folder = storage.local_path(uri).parent if storage.uses_local_files(uri) else None
                if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            else:
                loc = storage.parse_s3(uri)
                self.session.client("s3").delete_object(Bucket=loc.bucket, Key=loc.key)


_lock = threading.Lock()
_backends: dict[tuple[Any, ...], Backend] = {}


def boto_session(session: Any, region: str | None) -> Any:
    """A boto3 Session from what the caller gave: nothing, a boto3 Session, or a SageMaker SDK Session."""
    import boto3

    if session is None:
        return boto3.Session(region_name=region) if region else boto3.Session()
    return getattr(session, "boto_session", session)


def _sagemaker(session: Any, region: str | None) -> Backend:
    aws = boto_session(session, region)
    # A SageMaker SDK Session carries its own client; a boto3 Session makes one (clients are thread-safe).
    client = getattr(session, "sagemaker_client", None) or aws.client("sagemaker", region_name=region)
    return Backend("sagemaker", client, aws, os.environ.get(STAGE_ENV, DEFAULT_STAGE))


def _local() -> Backend:
    from evalstack.pipeline.local import LocalSageMakerClient

    home = storage.evalstack_home()
    return Backend("local", LocalSageMakerClient(home), None, os.environ.get(STAGE_ENV, DEFAULT_STAGE), home)


def _deployed(backend: Backend) -> bool:
    try:
        return any(backend.find_pipeline(eval_type) for eval_type in EVAL_TYPES)
    except (BotoCoreError, ClientError):
        return False  # no credentials or no access: nothing deployed that this caller can use


def _choice() -> str:
    choice = os.environ.get(BACKEND_ENV, "").strip().lower()
    if choice not in ("", "local", "sagemaker"):
        raise ValueError(f"{BACKEND_ENV}: must be 'local' or 'sagemaker', got {choice!r}")
    return choice


def picks_local(session: Any = None, region: str | None = None) -> bool:
    """Whether :func:`resolve_backend` picks the local backend for these arguments without asking AWS."""
    choice = _choice()
    return choice == "local" or (not choice and session is None and region is None)


def resolve_backend(session: Any = None, region: str | None = None) -> Backend:
    """The backend for these arguments (see the module docstring); cached, so clients are reused."""
    choice = _choice()
    if picks_local(session, region):
        key: tuple[Any, ...] = ("local", str(storage.evalstack_home()), os.environ.get(STAGE_ENV))
        make = _local
    else:
        key = ("sagemaker", id(session), region, os.environ.get(STAGE_ENV), choice)

        def make() -> Backend:
            backend = _sagemaker(session, region)
            return backend if choice == "sagemaker" or _deployed(backend) else _local()

    # boto3's default session is not thread-safe to set up: create clients under one lock.
    with _lock:
        if key not in _backends:
            _backends[key] = make()
        return _backends[key]
