"""Persistent response cache: SQLite in WAL mode, one commit per response.

Keys are the sha256 of the canonical JSON of (model identity, wire request), so a rerun after a
``kill -9`` finds every response that had been received and only re-sends what was in flight.
WAL with ``synchronous=NORMAL`` survives a process kill (not a power cut) at one fsync per checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalstack.storage import evalstack_home


def default_cache_path() -> Path:
    """Where every model call of this machine is cached: ``$EVALSTACK_CACHE`` or under EVALSTACK_HOME."""
    return Path(os.environ.get("EVALSTACK_CACHE", evalstack_home() / "cache" / "responses.sqlite"))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(identity: str, request: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``[identity, request]``."""
    return hashlib.sha256(canonical_json([identity, request]).encode("utf-8")).hexdigest()


class ResponseCache:
    """A thread-safe key -> JSON response store. ``ResponseCache(":memory:")`` is an in-process cache."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")

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
