"""SQLite state of the local backend: pipelines, executions and steps under ``$EVALSTACK_HOME``.

Clients in many processes and threads and the detached runners share the database; each call opens
its own connection (WAL mode, busy timeout), so no connection crosses a thread.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalstack import storage

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipelines (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    definition TEXT NOT NULL,
    role_arn TEXT NOT NULL,
    parallelism INTEGER,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    last_run REAL
);
CREATE TABLE IF NOT EXISTS executions (
    arn TEXT PRIMARY KEY,
    pipeline_name TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    status TEXT NOT NULL,
    failure_reason TEXT,
    parameters TEXT NOT NULL,
    definition TEXT NOT NULL,
    parallelism INTEGER,
    client_token TEXT,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    runner_pid INTEGER,
    heartbeat REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS executions_token ON executions (pipeline_name, client_token);
CREATE TABLE IF NOT EXISTS steps (
    execution_arn TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    start REAL,
    end REAL,
    failure_reason TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    pids TEXT NOT NULL DEFAULT '[]',
    attempt INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (execution_arn, name)
);
"""

ACTIVE_STATUSES = ("Executing", "Stopping")


def database_path() -> Path:
    return storage.evalstack_home() / "pipelines.sqlite"


def execution_dir(execution_id: str) -> Path:
    """Scratch space of one execution: instance folders standing in for /opt/ml, logs."""
    return storage.evalstack_home() / "executions" / execution_id


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or database_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the runner's writes
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextlib.contextmanager
    def connect(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; ``immediate`` takes the write lock up front (check-then-insert races)."""
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # Executions ---------------------------------------------------------------------------------

    def execution(self, arn: str) -> sqlite3.Row | None:
        with self.connect() as db:
            return db.execute("SELECT * FROM executions WHERE arn = ?", (arn,)).fetchone()

    def update_execution(self, arn: str, **fields: Any) -> None:
        fields["modified"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.connect() as db:
            db.execute(f"UPDATE executions SET {cols} WHERE arn = ?", (*fields.values(), arn))

    def request_stop(self, arn: str) -> bool:
        """Mark an executing execution Stopping in one statement, so a runner finishing at the same
        moment is never overwritten; False when it was no longer executing."""
        with self.connect() as db:
            cursor = db.execute(
                "UPDATE executions SET status = 'Stopping', stop_requested = 1, modified = ? "
                "WHERE arn = ? AND status = 'Executing'",
                (time.time(), arn),
            )
            return cursor.rowcount == 1

    def finish_execution(self, arn: str, status: str, failure_reason: str | None) -> None:
        """Set a terminal status unless another party (a stop, a dead-runner check) already did."""
        with self.connect() as db:
            db.execute(
                "UPDATE executions SET status = ?, failure_reason = ?, modified = ?, runner_pid = NULL "
                "WHERE arn = ? AND status IN ('Executing', 'Stopping')",
                (status, failure_reason, time.time(), arn),
            )

    # Steps --------------------------------------------------------------------------------------

    def steps(self, arn: str) -> list[sqlite3.Row]:
        with self.connect() as db:
            return db.execute("SELECT * FROM steps WHERE execution_arn = ? ORDER BY start, name", (arn,)).fetchall()

    def start_step(self, arn: str, name: str, step_type: str) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO steps (execution_arn, name, type, status, start) VALUES (?, ?, ?, ?, ?)",
                (arn, name, step_type, "Executing", time.time()),
            )

    def update_step(self, arn: str, name: str, **fields: Any) -> None:
        for key in ("metadata", "properties", "pids"):
            if key in fields:
                fields[key] = json.dumps(fields[key], sort_keys=True, default=str)
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.connect() as db:
            db.execute(
                f"UPDATE steps SET {cols} WHERE execution_arn = ? AND name = ?",
                (*fields.values(), arn, name),
            )

    def end_step(self, arn: str, name: str, status: str, failure_reason: str | None = None, **fields: Any) -> None:
        self.update_step(arn, name, status=status, end=time.time(), failure_reason=failure_reason, **fields)

    def end_running_steps(self, arn: str, status: str, failure_reason: str | None) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE steps SET status = ?, failure_reason = COALESCE(failure_reason, ?), end = ? "
                "WHERE execution_arn = ? AND status IN ('Starting', 'Executing', 'Stopping')",
                (status, failure_reason, time.time(), arn),
            )
