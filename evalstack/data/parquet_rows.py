"""Parquet rows, read one record batch at a time so memory follows the row-group size, not the file.

Parquet keeps its schema in a footer at the end of the file, so the reader must seek. Local files
are read in place; a non-seekable S3 body is first streamed to a temporary file (hashing it on the
way), which costs disk equal to the object size but never memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from functools import partial
from typing import IO, Any

from evalstack import storage
from evalstack.data.records import dataset_error

_CHUNK = 1 << 20
_BATCH_ROWS = 1024


class ParquetRows:
    """Rows of a seekable Parquet file; ``line`` is the 1-based row number."""

    where_columns = "schema"

    def __init__(self, handle: IO[bytes], uri: str, sha256: str):
        # Imported here, not at module level: the client validates JSONL/CSV datasets without the engine extra.
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._arrow_error = (pa.ArrowException, OSError)
        self._uri = uri
        self._sha256 = sha256
        try:
            self._file = pq.ParquetFile(handle)
        except self._arrow_error as err:
            raise dataset_error(uri, None, f"not a readable Parquet file: {err}") from None
        self.columns: list[str] | None = list(self._file.schema_arrow.names)

    def sha256(self) -> str:
        return self._sha256

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        row = 0
        batches = self._file.iter_batches(batch_size=_BATCH_ROWS)
        while True:
            try:
                batch = next(batches, None)
            except self._arrow_error as err:
                raise dataset_error(self._uri, f"row {row + 1}", f"unreadable Parquet data: {err}") from None
            if batch is None:
                return
            for values in batch.to_pylist():
                row += 1
                yield row, values


@contextlib.contextmanager
def open_parquet(uri: str) -> Iterator[ParquetRows]:
    """Hash the file in one streaming pass, then read rows from a seekable copy (or the file itself)."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        body = stack.enter_context(storage.open_binary(uri))
        target: IO[bytes] = body if body.seekable() else stack.enter_context(tempfile.TemporaryFile())
        for chunk in iter(partial(body.read, _CHUNK), b""):
            digest.update(chunk)
            if target is not body:
                target.write(chunk)
        target.seek(0)
        yield ParquetRows(target, uri, digest.hexdigest())
