"""Where bytes live: local paths, ``file://`` URIs and ``s3://`` objects behind one small API.

``s3://`` goes to Amazon S3 through boto3 when AWS credentials or an S3 endpoint are configured,
and otherwise to a local object folder (``$EVALSTACK_HOME/s3/<bucket>/<key>``), so the same URIs
work on one machine with no AWS account. ``EVALSTACK_S3=local|aws`` forces the choice.

Every write is atomic: readers see the old object or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse


def evalstack_home() -> Path:
    return Path(os.environ.get("EVALSTACK_HOME", Path.home() / ".evalstack"))


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def parse_s3(uri: str) -> S3Location:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"Not an s3:// URI: {uri!r}")
    return S3Location(parsed.netloc, parsed.path.lstrip("/"))


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_uses_aws() -> bool:
    """True when s3:// URIs go to a real (or moto) S3 endpoint rather than the local object folder."""
    mode = os.environ.get("EVALSTACK_S3", "").lower()
    if mode in ("local", "aws"):
        return mode == "aws"
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return True
    import boto3

    return boto3.Session().get_credentials() is not None


def local_path(uri: str) -> Path:
    """The local file behind ``uri``: a plain path, ``file://`` or a locally mapped ``s3://`` object."""
    if is_s3(uri):
        loc = parse_s3(uri)
        return evalstack_home() / "s3" / loc.bucket / loc.key
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return Path(uri)


def absolute(uri: str) -> str:
    """``uri`` with a relative local path made absolute, so pipeline steps (other processes, other
    working directories) find the same file; s3:// and file:// URIs are returned as they are."""
    if is_s3(uri) or uri.startswith("file://"):
        return uri
    return str(Path(uri).expanduser().resolve())


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def join(base: str, *parts: str) -> str:
    """Join URI or path segments with '/' (os.path.join would drop the scheme of s3://)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def uses_local_files(uri: str) -> bool:
    return not (is_s3(uri) and s3_uses_aws())


def size(uri: str) -> int:
    if uses_local_files(uri):
        return local_path(uri).stat().st_size
    loc = parse_s3(uri)
    return int(_s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])


def exists(uri: str) -> bool:
    if uses_local_files(uri):
        return local_path(uri).exists()
    from botocore.exceptions import ClientError

    loc = parse_s3(uri)
    try:
        _s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


@contextlib.contextmanager
def open_binary(uri: str) -> Iterator[IO[bytes]]:
    """A streaming binary reader: S3 bodies are read in chunks, never loaded whole."""
    if uses_local_files(uri):
        with open(local_path(uri), "rb") as handle:
            yield handle
        return
    loc = parse_s3(uri)
    body = _s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
    raw = body._raw_stream if hasattr(body, "_raw_stream") else body
    # urllib3 closes a response once its last byte is read; io.BufferedReader then raises
    # "readline of closed file" instead of returning EOF, so wrappers need auto_close off.
    if hasattr(raw, "auto_close"):
        raw.auto_close = False
    try:
        yield io.BufferedReader(raw)  # type: ignore[arg-type]
    finally:
        body.close()


@contextlib.contextmanager
def open_text(uri: str, encoding: str = "utf-8", newline: str | None = None) -> Iterator[IO[str]]:
    with open_binary(uri) as raw:
        yield io.TextIOWrapper(raw, encoding=encoding, newline=newline)


def read_bytes(uri: str) -> bytes:
    with open_binary(uri) as handle:
        return handle.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def _replace_atomically(target: Path, fill: Callable[[str], None]) -> None:
    """Have ``fill`` write a temp file beside ``target``, then rename it into place (or remove it on failure)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _sse(kms_key_id: str | None) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}


def write_bytes(uri: str, data: bytes, *, kms_key_id: str | None = None) -> None:
    """Write atomically: a temp file renamed into place locally, one PutObject on S3."""
    if uses_local_files(uri):

        def fill(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

        _replace_atomically(local_path(uri), fill)
        return
    loc = parse_s3(uri)
    _s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **_sse(kms_key_id))


def write_text(uri: str, text: str, *, kms_key_id: str | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), kms_key_id=kms_key_id)


def upload_file(path: Path, uri: str, *, kms_key_id: str | None = None) -> None:
    """Copy a finished local file to ``uri`` atomically (used for large outputs written in pieces)."""
    if uses_local_files(uri):
        target = local_path(uri)
        if target.resolve() != path.resolve():
            _replace_atomically(target, lambda tmp: shutil.copyfile(path, tmp))
        return
    loc = parse_s3(uri)
    extra = {"ExtraArgs": _sse(kms_key_id)} if kms_key_id else {}
    _s3_client().upload_file(str(path), loc.bucket, loc.key, **extra)


def list_uris(prefix: str) -> list[str]:
    """Every object or file under ``prefix``, sorted."""
    if uses_local_files(prefix):
        root = local_path(prefix)
        if not root.exists():
            return []
        base = prefix.rstrip("/")
        return sorted(join(base, p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file())
    loc = parse_s3(prefix)
    out: list[str] = []
    paginator = _s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
        out.extend(f"s3://{loc.bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    return sorted(out)
