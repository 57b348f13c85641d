"""Persistent response cache: SQLite in WAL mode, one commit per response.

Keys are the sha256 of the canonical JSON of (model identity, wire request), so a rerun after a
``kill -9`` finds every response that had been received and only re-sends what was in flight.
WAL with ``synchronous=NORMAL`` survives a process kill (not a power cut) at one fsync per checkpoint.

A cache file SQLite cannot read is moved aside (``responses.sqlite.corrupt-<time>``) with a
warning and an empty cache takes its place: a cache only saves requests, it must never stop a run.
``evalstack cache info|clear`` (:func:`cache_info`, :func:`clear_cache`) inspect and remove it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalstack import storage

CACHE_ENV = "EVALSTACK_CACHE"
_SIDE_SUFFIXES = ("-wal", "-shm")
CONNECT_TIMEOUT = 60.0  # seconds a new connection waits for another process's lock


class CorruptCacheWarning(UserWarning):
    """The response cache file was unreadable and has been moved aside."""


def default_cache_path() -> Path:
    """Where every model call of this machine is cached: ``$EVALSTACK_CACHE`` or under EVALSTACK_HOME
    (absolute, so step processes running in scratch folders share it)."""
    raw = os.environ.get(CACHE_ENV)
    return storage.absolute_path(raw) if raw else storage.evalstack_home() / "cache" / "responses.sqlite"


def _files(path: Path) -> list[Path]:
    """The database file and SQLite's WAL and shared-memory files beside it."""
    return [path, *(path.with_name(path.name + suffix) for suffix in _SIDE_SUFFIXES)]


def _connect(path: str) -> sqlite3.Connection:
    """A connection to the cache at ``path``, in WAL mode, with its table.

    Processes that open a new cache at the same moment (a run's candidate and base evaluation steps) race
    to switch it to WAL, and SQLite answers the loser "database is locked" at once, without waiting for
    its busy timeout: so that answer is retried here until the timeout has passed."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=CONNECT_TIMEOUT)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")
            return db
        except sqlite3.OperationalError as err:
            db.close()
            if not storage.is_locked(err) or time.monotonic() >= deadline:
                raise
        except BaseException:
            db.close()
            raise
        time.sleep(0.01)


def _move_aside(path: Path, inode: int | None) -> Path:
    """Rename a corrupt cache (and its WAL) out of the way; returns where the database file went.

    ``inode`` is the file that was found corrupt: if another process already replaced it with a
    fresh cache, that one is left alone.
    """
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        current = path.stat().st_ino
    except FileNotFoundError:
        return aside  # another process moved it already
    if inode is not None and current != inode:
        return aside
    for source, suffix in zip(_files(path), ("", *_SIDE_SUFFIXES), strict=True):
        if source.exists():
            os.replace(source, aside.with_name(aside.name + suffix))
    return aside


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(identity: str, request: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``[identity, request]``."""
    return hashlib.sha256(canonical_json([identity, request]).encode("utf-8")).hexdigest()


class ResponseCache:
    """A thread-safe key -> JSON response store. ``ResponseCache(":memory:")`` is an in-process cache."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        if self.path == ":memory:":
            self._db = _connect(self.path)
            return
        file = Path(self.path)
        file.parent.mkdir(parents=True, exist_ok=True)
        inode = file.stat().st_ino if file.exists() else None
        try:
            self._db = _connect(self.path)
        except sqlite3.DatabaseError as err:
            if not storage.is_corrupt(err):
                raise
            aside = _move_aside(file, inode)
            warnings.warn(
                f"response cache {file} is corrupt ({err}); moved it aside to {aside} and started an empty cache",
                CorruptCacheWarning,
                stacklevel=2,
            )
            self._db = _connect(self.path)

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite caps bound parameters per statement
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk)
                found.update((key, json.loads(text)) for key, text in rows)
        return found

    def put(self, key: str, response: Any) -> None:
        """Store and commit at once (autocommit), so a killed process keeps every finished response."""
        text = canonical_json(response)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, response) VALUES (?, ?)", (key, text))

    def keys(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT key FROM responses")}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    exists: bool
    entries: int
    size_bytes: int  # the database with its WAL and shared-memory files


def cache_info(path: Path | None = None) -> CacheInfo:
    """What the cache at ``path`` (default: :func:`default_cache_path`) holds; nothing is created or moved."""
    path = path or default_cache_path()
    size = sum(f.stat().st_size for f in _files(path) if f.exists())
    if not path.exists():
        return CacheInfo(path, False, 0, size)
    db = sqlite3.connect(path, timeout=60)
    try:
        tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'responses'").fetchall()
        (entries,) = db.execute("SELECT COUNT(*) FROM responses").fetchone() if tables else (0,)
    except sqlite3.DatabaseError as err:
        if storage.is_corrupt(err):
            raise storage.CorruptDatabaseError(
                f"response cache {path} is corrupt ({err}); run `evalstack cache clear` or delete it "
                "to start an empty cache (evaluations also move a corrupt cache aside by themselves)"
            ) from err
        raise
    finally:
        db.close()
    return CacheInfo(path, True, int(entries), size)


def clear_cache(path: Path | None = None) -> list[Path]:
    """Remove the cache at ``path`` (default: :func:`default_cache_path`), with its WAL and any copies
    moved aside as corrupt; returns the files removed. Run it while no evaluation uses the cache."""
    path = path or default_cache_path()
    removed = [f for f in [*_files(path), *sorted(path.parent.glob(path.name + ".corrupt-*"))] if f.exists()]
    for file in removed:
        file.unlink()
    return removed
