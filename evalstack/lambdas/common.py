"""Helpers shared by the handlers: structured logs, S3 JSON objects, idempotency tokens."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

# The functions run with Lambda's JSON log format, which turns ``extra=`` fields into JSON keys.
LOG = logging.getLogger("evalstack")
LOG.setLevel(os.environ.get("LOG_LEVEL", "INFO"))

# SageMaker's ClientRequestToken must be 32-128 characters: a SHA-256 hex digest is 64.
TOKEN_CHARS = 64


def log(message: str, **fields: Any) -> None:
    LOG.info(message, extra={"evalstack": fields})


def idempotency_token(*parts: str) -> str:
    """A stable token for one logical request, so a redelivered event maps to the same execution."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:TOKEN_CHARS]


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def join_uri(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])


def read_json(s3: Any, uri: str) -> dict[str, Any] | None:
    """The JSON object at ``uri``, or None when it does not exist."""
    bucket, key = split_s3_uri(uri)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def write_text(s3: Any, uri: str, text: str, kms_key_id: str | None) -> None:
    """One PUT is atomic in S3; SSE-KMS with the platform key when one is configured."""
    bucket, key = split_s3_uri(uri)
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType="application/json", **extra)


def require_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ValueError(f"environment variable {name} is required")
    return value
