"""Helpers shared by the handlers: structured logs, event validation, S3 objects, the control layout."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

# The functions run with Lambda's JSON log format, which turns ``extra=`` fields into JSON keys.
LOG = logging.getLogger("evalstack")
LOG.setLevel(os.environ.get("LOG_LEVEL", "INFO"))

# SageMaker's ClientRequestToken must be 32-128 characters: a SHA-256 hex digest is 64.
TOKEN_CHARS = 64
# How much of a bad value an error line quotes: enough to recognise it, never a whole payload.
_SHOWN_CHARS = 80
MODEL_PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/([^/]+)/(\d+)$")
_PIPELINE_EXECUTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:pipeline/([a-zA-Z0-9-]{1,256})/execution/([a-zA-Z0-9]{1,256})$"
)


class InvalidEvent(ValueError):
    """An event a handler cannot use. It is logged once and dropped: retrying it cannot help."""


def log(message: str, **fields: Any) -> None:
    LOG.info(message, extra={"evalstack": fields})


def log_error(message: str, **fields: Any) -> None:
    LOG.error(message, extra={"evalstack": fields})


def shown(value: Any) -> str:
    """A short, printable rendering of a value from an event or a file, for error messages."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def event_id(event: Any, key: str = "id") -> str | None:
    """The event's id for logs (EventBridge ``id``, SQS ``messageId``), when it has a usable one."""
    value = event.get(key) if isinstance(event, dict) else None
    if value is None:
        return None
    return value if isinstance(value, str) and len(value) <= _SHOWN_CHARS else shown(value)


def invalid_event(handler: str, err: InvalidEvent, event_id: str | None) -> dict[str, Any]:
    """Log the one structured error line for an unusable event and return the handler's answer."""
    log_error(f"{handler}.invalid_event", reason=str(err), event_id=event_id)
    return {"status": "invalid-event", "reason": str(err)}


def require(mapping: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``mapping[name]`` when ``mapping`` is an object and the value has type ``kind`` (a non-empty
    string for ``str``, never a bool for ``int``); else InvalidEvent naming ``where.name``."""
    if not isinstance(mapping, dict):
        raise InvalidEvent(f"{where}: expected an object, got {type(mapping).__name__}")
    if name not in mapping:
        raise InvalidEvent(f"{where}.{name}: missing")
    value = mapping[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds) or value == "":
        expected = " or ".join(k.__name__ for k in kinds)
        raise InvalidEvent(f"{where}.{name}: expected a non-empty {expected}, got {shown(value)}")
    return value


def utc_time(value: Any, where: str) -> datetime:
    """An ISO 8601 timestamp with its offset (EventBridge and Scheduler send ``...Z``), in UTC."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidEvent(f"{where}: expected an ISO 8601 time with a UTC offset, got {shown(value)}")
    return parsed.astimezone(UTC)


def pipeline_execution_parts(arn: Any, where: str) -> tuple[str, str]:
    """(pipeline name, execution id) of a pipeline execution ARN."""
    match = _PIPELINE_EXECUTION_ARN.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise InvalidEvent(f"{where}: not a pipeline execution ARN: {shown(arn)}")
    return match.group(1), match.group(2)


def idempotency_token(*parts: str) -> str:
    """A stable token for one logical request, so a redelivered event maps to the same execution."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:TOKEN_CHARS]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def join_uri(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])


# The control prefix (CONTROL_URI) is written only by the trigger; the job role may read specs/ only.
def spec_uri(control_uri: str, token: str) -> str:
    return join_uri(control_uri, "specs", token, "spec.json")


def token_marker_uri(control_uri: str, token: str) -> str:
    """The trigger's record of the execution it started for one request (its duplicate check)."""
    return join_uri(control_uri, "markers", "tokens", f"{token}.json")


def execution_marker_uri(control_uri: str, execution_id: str) -> str:
    """The same record keyed by the execution, which is what the gate's event names."""
    return join_uri(control_uri, "markers", "executions", f"{execution_id}.json")


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    metadata: dict[str, str]


def read_object(s3: Any, uri: str) -> StoredObject | None:
    """The object at ``uri``, or None when it does not exist."""
    bucket, key = split_s3_uri(uri)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return StoredObject(response["Body"].read(), response.get("Metadata") or {})


def parse_json(body: bytes, uri: str) -> Any:
    """The JSON document in ``body``; ValueError naming ``uri`` when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{uri}: not a JSON document ({shown(str(err))})") from err


def read_json(s3: Any, uri: str) -> Any:
    """The JSON document at ``uri``, or None when it does not exist."""
    stored = read_object(s3, uri)
    return None if stored is None else parse_json(stored.body, uri)


def _encryption(kms_key_id: str | None) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}


def put_if_absent(
    s3: Any, uri: str, text: str, kms_key_id: str | None, metadata: dict[str, str] | None = None
) -> bool:
    """Create the object unless it exists (S3 conditional write); False when another writer was first.

    One PUT is atomic; SSE-KMS with the platform key when one is configured. A 409
    ConditionalRequestConflict (a concurrent conditional write in flight) is raised: it is transient.
    """
    bucket, key = split_s3_uri(uri)
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=text.encode("utf-8"),
            ContentType="application/json",
            IfNoneMatch="*",
            Metadata=metadata or {},
            **_encryption(kms_key_id),
        )
    except ClientError as err:
        if err.response["Error"]["Code"] == "PreconditionFailed":
            return False
        raise
    return True


def require_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ValueError(f"environment variable {name} is required")
    return value


def env_list(name: str, default: str) -> tuple[str, ...]:
    """A comma-separated environment variable, blanks dropped."""
    return tuple(item.strip() for item in os.environ.get(name, default).split(",") if item.strip())
