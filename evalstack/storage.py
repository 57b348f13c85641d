"""Where bytes live: local paths, ``file://`` URIs and ``s3://`` objects behind one small API.

``s3://`` goes to Amazon S3 through boto3 when AWS credentials or an S3 endpoint are configured,
and otherwise to a local object folder (``$EVALSTACK_HOME/s3/<bucket>/<key>``), so the same URIs
work on one machine with no AWS account. ``EVALSTACK_S3=local|aws`` forces the choice.

Every location is parsed by :func:`parse_uri` and nothing else: ``s3://bucket/key`` with a valid
bucket name and a normalised key (no ``.``/``..``/empty segments, no control characters), or a
local path, plain or ``file://``. Anything else (``http://...``, ``s3:/b``) is an error naming the
accepted forms. The local object folder is confined to its root, checked on the resolved path.

Every write is atomic: readers see the old object or the new one, never a torn file.

S3 writes are write-once by default: they carry ``If-None-Match: *`` (PutObject, and
CompleteMultipartUpload for large files), so an object, once written, cannot be replaced by
a later write. The platform's bucket policy requires the header from the job role, so job code
of one execution cannot change another execution's files. Re-writing identical bytes succeeds
(an idempotent step retry); other bytes raise :class:`WriteOnceError`. ``replace=True`` opts
out for the few files that are rewritten by design (progress files). Local files keep the
atomic replace.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

HOME_ENV = "EVALSTACK_HOME"
ACCEPTED_FORMS = (
    "s3://bucket/key (a valid S3 bucket name, a key without '.', '..' or empty segments) "
    "or a local path (plain or file:///absolute/path)"
)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_pinned: dict[str, Path] = {}
_pinned_lock = threading.Lock()


class UriError(ValueError):
    """A location that is neither a valid ``s3://bucket/key`` nor a local path."""


class WriteOnceError(RuntimeError):
    """An S3 object that already exists with other bytes: evaluation outputs are write-once."""


def absolute_path(raw: str) -> Path:
    """``raw`` (``~`` expanded) made absolute against the working directory of its first use.

    Pinned per process: a relative ``EVALSTACK_HOME`` keeps meaning the same folder after a chdir,
    and is handed to child processes (which run in scratch folders) as the absolute path.
    """
    with _pinned_lock:
        if raw not in _pinned:
            _pinned[raw] = Path(os.path.abspath(os.path.expanduser(raw)))
        return _pinned[raw]


def evalstack_home() -> Path:
    return absolute_path(os.environ.get(HOME_ENV) or str(Path.home() / ".evalstack"))


class CorruptDatabaseError(RuntimeError):
    """A SQLite file of evalstack (state database, response cache) that SQLite cannot read."""


def is_corrupt(err: sqlite3.Error) -> bool:
    """True for "file is not a database" and "database disk image is malformed", not for a busy lock."""
    return getattr(err, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT")


def is_locked(err: sqlite3.Error) -> bool:
    """True when another connection holds the lock SQLite needed (after its busy timeout ran out)."""
    name = getattr(err, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(err)


def env_number(name: str, default: float) -> float:
    """A positive number from the environment (tuning knobs such as busy timeouts), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    problem = ValueError(f"{name}: must be a positive number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise problem from None
    if not 0 < value < float("inf"):
        raise problem
    return value


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def _bucket_problem(bucket: str) -> str | None:
    if not _BUCKET.match(bucket):
        return (
            "a bucket name has 3-63 characters: lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    if ".." in bucket:
        return "a bucket name has no two adjacent periods"
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(bucket)
        return "a bucket name is not an IP address"
    if bucket.startswith("xn--") or bucket.endswith(("-s3alias", "--ol-s3")):
        return "the bucket name uses a prefix or suffix S3 reserves"
    return None


def _key_problem(key: str) -> str | None:
    if _CONTROL.search(key):
        return "the key has a control character"
    segments = key.split("/")
    if segments and segments[-1] == "":
        segments.pop()  # a trailing '/' marks a prefix
    if key and any(s in ("", ".", "..") for s in segments):
        return "the key has a '.', '..' or empty segment"
    return None


def parse_uri(uri: str, what: str | None = None) -> S3Location | Path:
    """The one parser of locations: an :class:`S3Location` or a local :class:`Path`.

    ``what`` names the field the location came from, for the error message.
    """

    def fail(reason: str) -> UriError:
        field = f"{what}: " if what else ""
        return UriError(f"{field}unsupported location {uri!r} ({reason}); use {ACCEPTED_FORMS}")

    if not isinstance(uri, str) or not uri:
        raise fail("not a non-empty string")
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        problem = _bucket_problem(bucket) or _key_problem(key)
        if problem:
            raise fail(problem)
        return S3Location(bucket, key)
    if _CONTROL.search(uri):
        raise fail("it has a control character")
    if uri.startswith("file://"):
        host, slash, path = uri[len("file://") :].partition("/")
        if host not in ("", "localhost") or not slash:
            raise fail("a file:// URI names an absolute path on this machine: file:///path")
        return Path("/" + path)
    if _SCHEME.match(uri):
        raise fail(f"scheme {uri.split(':', 1)[0]!r} is not supported")
    return Path(uri)


def parse_s3(uri: str) -> S3Location:
    loc = parse_uri(uri)
    if not isinstance(loc, S3Location):
        raise UriError(f"not an s3:// URI: {uri!r}; use s3://bucket/key")
    return loc


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


def local_object_root() -> Path:
    """The folder standing in for S3 when no AWS is configured."""
    return evalstack_home() / "s3"


def local_path(uri: str) -> Path:
    """The local file behind ``uri``: a plain path, ``file://`` or a locally mapped ``s3://`` object."""
    loc = parse_uri(uri)
    if isinstance(loc, Path):
        return loc
    root = local_object_root()
    target = root / loc.bucket / loc.key
    # Checked on the resolved path, so a symlink planted under the root cannot lead out of it either.
    if not target.resolve().is_relative_to(root.resolve()):
        raise UriError(f"{uri!r} resolves outside the local object folder {root}")
    return target


def absolute(uri: str, what: str | None = None) -> str:
    """``uri`` with a relative local path made absolute, so pipeline steps (other processes, other
    working directories) find the same file; s3:// and file:// URIs are returned as they are.
    Raises :class:`UriError` for anything :func:`parse_uri` rejects."""
    loc = parse_uri(uri, what)
    if isinstance(loc, S3Location) or uri.startswith("file://"):
        return uri
    return str(loc.expanduser().resolve())


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def join(base: str, *parts: str) -> str:
    """Join URI or path segments with '/' (os.path.join would drop the scheme of s3://).

    The result is parsed like any location, and no part may climb with '.' or '..'.
    """
    out = base.rstrip("/")
    for part in parts:
        piece = part.strip("/")
        if any(s in (".", "..") for s in piece.split("/")):
            raise UriError(f"path segment {part!r} may not contain '.' or '..' (joining onto {base!r})")
        out = f"{out}/{piece}"
    parse_uri(out)
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


def _link_or_copy(path: Path, tmp: str) -> None:
    """``tmp`` (a fresh temp file's name) made a hard link to ``path``; a copy where the file system cannot."""
    os.unlink(tmp)
    try:
        os.link(path, tmp)
    except OSError:  # another file system (EXDEV), or one without hard links
        shutil.copyfile(path, tmp)
    os.chmod(tmp, 0o600)  # the mode mkstemp gives every other output: readable by its owner only


def _sse(kms_key_id: str | None) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}


# Files up to this size go in one PutObject; larger ones in parts of MULTIPART_PART_SIZE or more
# (S3 allows at most 10,000 parts). s3transfer's upload_file cannot send If-None-Match, so the
# multipart upload is explicit. Module constants, so tests can exercise the multipart path cheaply.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_PART_SIZE = 16 * 1024 * 1024
_MAX_PARTS = 10_000
_COMPARE_CHUNK = 1024 * 1024
# S3 answers 409 ConditionalRequestConflict while a concurrent conditional write of the key is in
# flight; the request is to be retried, and the retry then succeeds or sees the winner (412).
_CONFLICT_ATTEMPTS = 3


def _write_condition(replace: bool) -> dict[str, str]:
    return {} if replace else {"IfNoneMatch": "*"}


def _write_once(uri: str, attempt: Callable[[], None], same_bytes: Callable[[], bool]) -> None:
    """Run a conditional S3 write; an existing object is accepted only when it holds the same bytes."""
    from botocore.exceptions import ClientError

    for tries in range(1, _CONFLICT_ATTEMPTS + 1):
        try:
            attempt()
            return
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code == "ConditionalRequestConflict" and tries < _CONFLICT_ATTEMPTS:
                time.sleep(tries)
                continue
            if code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            if same_bytes():
                return  # an earlier attempt of the same step wrote exactly this: a retry
            raise WriteOnceError(
                f"{uri}: already exists with other content, written by an earlier attempt or another "
                "execution; evaluation outputs are write-once, so it was left as it is"
            ) from err


def _same_object(loc: S3Location, size: int, chunks: Callable[[], Iterator[bytes]]) -> bool:
    """True when the object at ``loc`` holds exactly the bytes ``chunks`` yields (streamed, not loaded)."""
    client = _s3_client()
    if int(client.head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"]) != size:
        return False
    body = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
    try:
        pending = b""
        for chunk in chunks():
            pending += chunk
            while pending:
                got = body.read(len(pending))
                if not got or got != pending[: len(got)]:
                    return False
                pending = pending[len(got) :]
        return body.read(1) == b""
    finally:
        body.close()


def _file_chunks(path: Path) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(_COMPARE_CHUNK):
                yield chunk

    return chunks


def write_bytes(uri: str, data: bytes, *, kms_key_id: str | None = None, replace: bool = False) -> None:
    """Write atomically: a temp file renamed into place locally, one PutObject on S3.

    On S3 the write is write-once unless ``replace`` (see the module docstring).
    """
    if uses_local_files(uri):

        def fill(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

        _replace_atomically(local_path(uri), fill)
        return
    loc = parse_s3(uri)

    def put() -> None:
        _s3_client().put_object(
            Bucket=loc.bucket, Key=loc.key, Body=data, **_sse(kms_key_id), **_write_condition(replace)
        )

    _write_once(uri, put, lambda: _same_object(loc, len(data), lambda: iter((data,))))


def write_text(uri: str, text: str, *, kms_key_id: str | None = None, replace: bool = False) -> None:
    write_bytes(uri, text.encode("utf-8"), kms_key_id=kms_key_id, replace=replace)


def write_text_keeping_first(uri: str, text: str, *, kms_key_id: str | None = None) -> None:
    """``write_text`` for files that differ between attempts of a retried step only in what they display
    (times): where the first attempt already wrote the file, it stays, and stderr (the step's log) says
    so, rather than failing a finished step on write-once S3."""
    try:
        write_text(uri, text, kms_key_id=kms_key_id)
    except WriteOnceError:
        print(f"evalstack: keeping the first attempt's {uri}", file=sys.stderr)


def upload_file(path: Path, uri: str, *, kms_key_id: str | None = None, replace: bool = False) -> None:
    """Copy a finished local file to ``uri`` atomically (used for large outputs written in pieces).

    On S3 the write is write-once unless ``replace`` (see the module docstring); files larger than
    ``MULTIPART_THRESHOLD`` go up in parts, read one part at a time. A local target on the file's own
    file system is a hard link to it, not a copy: outputs are never changed once written, and the local
    backend passes a 2 GB samples file from folder to folder several times in a run.
    """
    if uses_local_files(uri):
        target = local_path(uri)
        if target.resolve() != path.resolve():
            _replace_atomically(target, partial(_link_or_copy, path))
        return
    loc = parse_s3(uri)
    length = path.stat().st_size

    def put() -> None:
        with open(path, "rb") as handle:
            _s3_client().put_object(
                Bucket=loc.bucket, Key=loc.key, Body=handle, **_sse(kms_key_id), **_write_condition(replace)
            )

    attempt = put if length <= MULTIPART_THRESHOLD else lambda: _multipart_upload(path, loc, kms_key_id, replace)
    _write_once(uri, attempt, lambda: _same_object(loc, length, _file_chunks(path)))


def _multipart_upload(path: Path, loc: S3Location, kms_key_id: str | None, replace: bool) -> None:
    """One multipart upload whose completion carries the write condition; aborted if anything fails."""
    client = _s3_client()
    part_size = max(MULTIPART_PART_SIZE, -(-path.stat().st_size // _MAX_PARTS))
    upload = client.create_multipart_upload(Bucket=loc.bucket, Key=loc.key, **_sse(kms_key_id))["UploadId"]
    try:
        parts = []
        with open(path, "rb") as handle:
            while chunk := handle.read(part_size):
                number = len(parts) + 1
                answer = client.upload_part(
                    Bucket=loc.bucket, Key=loc.key, UploadId=upload, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        client.complete_multipart_upload(
            Bucket=loc.bucket,
            Key=loc.key,
            UploadId=upload,
            MultipartUpload={"Parts": parts},
            **_write_condition(replace),
        )
    except BaseException:
        client.abort_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload)
        raise


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


def delete(uri: str) -> None:
    """Remove one file or object; one that is already gone is not an error."""
    if uses_local_files(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    loc = parse_s3(uri)
    _s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
