"""Where benchmark files come from: a local folder, an S3 prefix, or HF datasets at a pinned revision.

The data root is deployment configuration, not part of a spec: ``EVALSTACK_BENCHMARK_DATA`` holds
a local path, a ``file://`` URI or an ``s3://`` prefix laid out like ``shared/benchmarks`` (see its
MANIFEST.md; ``evalstack data fetch NAME --root DIR`` fills such a folder from the hub), or the word
``hf`` to read the HF datasets equivalents at their pinned revisions, which is also the default when
it is unset. With ``hf``, ``EVALSTACK_HF_MIRROR`` may name a local folder of hub dataset repositories
(``<mirror>/<owner>/<name>``, each downloaded with ``huggingface_hub.snapshot_download(repo_id,
repo_type="dataset", revision=<sha>, local_dir=...)``) for hosts without hub access; the pinned
revision is then checked against the download metadata.

A :class:`FileSource` remembers the bytes of every file it read, so the dataset hash covers
exactly the files a run used, whichever root they came from.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalstack import storage

DATA_ENV = "EVALSTACK_BENCHMARK_DATA"
HF_MIRROR_ENV = "EVALSTACK_HF_MIRROR"
HF_SOURCE = "hf"


def data_root() -> str:
    return os.environ.get(DATA_ENV) or HF_SOURCE


@dataclass
class FileSource:
    """Reads original benchmark files under ``root`` (local path, file:// or s3:// prefix)."""

    root: str
    _read: dict[str, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def description(self) -> str:
        return self.root

    def uri(self, relpath: str) -> str:
        return storage.join(self.root, relpath)

    def read_bytes(self, relpath: str) -> bytes:
        with self._lock:
            cached = self._read.get(relpath)
        if cached is not None:
            return cached
        uri = self.uri(relpath)
        if not storage.exists(uri):
            raise FileNotFoundError(
                f"benchmark file {relpath!r} not found under {self.root!r} (set {DATA_ENV} to the folder or "
                "s3:// prefix that holds the original files, or fill a folder with `evalstack data fetch NAME`)"
            )
        data = storage.read_bytes(uri)
        with self._lock:
            self._read[relpath] = data
        return data

    def read_text(self, relpath: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(relpath).decode(encoding)

    def list(self, relfolder: str, suffix: str) -> list[str]:
        """Relative paths of the files directly or indirectly under ``relfolder`` ending in ``suffix``."""
        prefix = self.uri(relfolder).rstrip("/") + "/"
        base = self.root.rstrip("/") + "/"
        return sorted(u[len(base) :] for u in storage.list_uris(prefix) if u.endswith(suffix))

    def sha256(self) -> str:
        """sha256 over (relative path, file sha256) of every file read, in sorted path order."""
        digest = hashlib.sha256()
        with self._lock:
            items = sorted(self._read.items())
        for relpath, data in items:
            digest.update(f"{relpath}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class HfDataset:
    """One HF datasets table: ``load_dataset(path, name, split=split, revision=revision)``."""

    path: str
    name: str | None
    split: str
    revision: str


@dataclass
class HfSource:
    """Reads the HF datasets equivalents; ``datasets`` is imported only when a table is loaded.

    ``mirror`` is a local folder of hub dataset repositories (see the module docstring); without it
    tables come from the hub by id.
    """

    mirror: str | None = None
    _tables: dict[HfDataset, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def description(self) -> str:
        return HF_SOURCE if self.mirror is None else f"{HF_SOURCE} (mirror {self.mirror})"

    def rows(self, table: HfDataset) -> list[dict[str, Any]]:
        if table not in self._tables:
            try:
                import datasets
            except ImportError as err:
                raise ImportError(f"{DATA_ENV}=hf needs the 'datasets' package (pip install 'evalstack[hf]')") from err
            location = table.path if self.mirror is None else self._mirrored(table)
            loaded = datasets.load_dataset(location, table.name, split=table.split, revision=table.revision)
            self._tables[table] = [dict(row) for row in loaded]
        return self._tables[table]

    def _mirrored(self, table: HfDataset) -> str:
        """The mirror folder of ``table.path``, after checking it was downloaded at ``table.revision``.

        ``snapshot_download(local_dir=...)`` records, per downloaded file, a
        ``.cache/huggingface/download/<file>.metadata`` whose first line is the commit sha
        (huggingface_hub ``_local_folder.write_download_metadata``); ``datasets`` ignores
        ``revision`` for a local folder, so this is what pins it.
        """
        folder = Path(str(self.mirror)) / table.path
        if not folder.is_dir():
            raise FileNotFoundError(f"{HF_MIRROR_ENV}: no folder {folder} for HF dataset {table.path!r}")
        metadata = sorted((folder / ".cache" / "huggingface" / "download").rglob("*.metadata"))
        if not metadata:
            raise ValueError(f"{folder}: no huggingface_hub download metadata, so its revision cannot be checked")
        for path in metadata:
            commit = path.read_text(encoding="utf-8").split("\n", 1)[0].strip()
            if commit != table.revision:
                raise ValueError(f"{path}: line 1: downloaded at commit {commit!r}, pinned {table.revision!r}")
        return str(folder)

    def sha256(self) -> str:
        """sha256 over the identity (path, name, split, revision) of every table read."""
        digest = hashlib.sha256()
        for table in sorted(self._tables, key=lambda t: (t.path, t.name or "", t.split)):
            digest.update(f"{table.path}\0{table.name}\0{table.split}\0{table.revision}\n".encode())
        return digest.hexdigest()


Source = FileSource | HfSource


def open_source(root: str | None = None) -> Source:
    root = root or data_root()
    if root == HF_SOURCE:
        return HfSource(os.environ.get(HF_MIRROR_ENV) or None)
    return FileSource(root)
