"""SQLite state of the local backend: pipelines, executions and steps under ``$EVALSTACK_HOME``.

Clients in many processes and threads and the detached runners share the database; each
transaction opens its own connection (WAL mode, busy timeout), so no connection crosses a thread.
Another process may hold the database lock for a while (a backup, a long query): every transaction
waits ``EVALSTACK_DB_BUSY_TIMEOUT`` seconds (default 30) for it, up to ``EVALSTACK_DB_RETRIES``
attempts (default 8) with backoff, before it fails naming the file.

Beside the database, files that no lock can hold up (under ``executions/<id>/``):
- ``heartbeat``: touched by the runner every second; its age tells the client whether the runner lives;
- ``records/<step>.json``: a step's own completion record, written before the database is told;
- ``outcome.json``: the runner's final verdict, written before the database is told.
When the database missed one of them (the runner died, or the lock outlasted every retry), the
runner and the client reconcile from these files instead of failing a completed execution.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from evalstack import storage

T = TypeVar("T")
BUSY_TIMEOUT_ENV = "EVALSTACK_DB_BUSY_TIMEOUT"
RETRIES_ENV = "EVALSTACK_DB_RETRIES"
DEFAULT_BUSY_TIMEOUT_SECONDS = 30.0
DEFAULT_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 2.0

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


def execution_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


class StateLockedError(RuntimeError):
    """The state database stayed locked by another process through every retry."""


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or database_path()
        self.busy_timeout = storage.env_number(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_SECONDS)
        self.attempts = max(1, int(storage.env_number(RETRIES_ENV, DEFAULT_ATTEMPTS)))
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def create() -> None:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the runner's writes
                db.executescript(SCHEMA)
            finally:
                db.close()

        self._retrying(create, self.attempts)

    @property
    def home(self) -> Path:
        return self.path.parent

    def _retrying(self, attempt: Callable[[], T], attempts: int) -> T:
        """``attempt()``, again after a backoff while the database is locked; corruption is named at once."""
        for number in range(1, attempts + 1):
            try:
                return attempt()
            except sqlite3.DatabaseError as err:
                if storage.is_corrupt(err):
                    raise storage.CorruptDatabaseError(
                        f"state database {self.path} is corrupt ({err}); move it aside or delete it to start fresh "
                        "(the executions it recorded are forgotten; their results stay where they were written)"
                    ) from err
                if not storage.is_locked(err):
                    raise
                if number == attempts:
                    raise StateLockedError(
                        f"state database {self.path} stayed locked by another process through {attempts} attempt(s) "
                        f"of {self.busy_timeout:g} s ({BUSY_TIMEOUT_ENV}, {RETRIES_ENV}): {err}"
                    ) from err
            time.sleep(min(0.1 * 2 ** (number - 1), MAX_BACKOFF_SECONDS))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def transaction(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """``work(db)`` in one transaction, retried whole while the database is locked.

        ``write`` takes the write lock up front (BEGIN IMMEDIATE), so check-then-insert is atomic
        and a lock wait happens at BEGIN, where the busy timeout applies, never mid-transaction.
        """

        def attempt() -> T:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            db.row_factory = sqlite3.Row
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
            finally:
                db.close()

        return self._retrying(attempt, self.attempts)

    # Files beside the database --------------------------------------------------------------------

    def execution_dir(self, arn: str) -> Path:
        """Scratch space of one execution: instance folders standing in for /opt/ml, logs, records."""
        return self.home / "executions" / execution_id(arn)

    def beat(self, arn: str) -> None:
        """Touch the execution's heartbeat file (a file, so a locked database cannot delay it)."""
        path = self.execution_dir(arn) / "heartbeat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def last_beat(self, arn: str) -> float | None:
        try:
            return (self.execution_dir(arn) / "heartbeat").stat().st_mtime
        except FileNotFoundError:
            return None

    def _write_json(self, path: Path, value: dict[str, Any]) -> None:
        storage.write_text(str(path), json.dumps(value, sort_keys=True, default=str))

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a valid record ({err}); delete it to run that step again") from err

    def write_step_record(self, arn: str, record: dict[str, Any]) -> None:
        """A succeeded step's completion record: name, type, start, end, metadata, properties."""
        self._write_json(self.execution_dir(arn) / "records" / f"{record['name']}.json", record)

    def step_records(self, arn: str) -> dict[str, dict[str, Any]]:
        folder = self.execution_dir(arn) / "records"
        records = (self._read_json(p) for p in sorted(folder.glob("*.json")))
        return {r["name"]: r for r in records if r is not None}

    def write_outcome(self, arn: str, status: str, failure_reason: str | None) -> None:
        self._write_json(self.execution_dir(arn) / "outcome.json", {"status": status, "failure_reason": failure_reason})

    def outcome(self, arn: str) -> dict[str, Any] | None:
        return self._read_json(self.execution_dir(arn) / "outcome.json")

    def clear_outcome(self, arn: str) -> None:
        (self.execution_dir(arn) / "outcome.json").unlink(missing_ok=True)

    # Executions ---------------------------------------------------------------------------------

    def execution(self, arn: str) -> sqlite3.Row | None:
        return self.transaction(lambda db: db.execute("SELECT * FROM executions WHERE arn = ?", (arn,)).fetchone())

    def update_execution(self, arn: str, **fields: Any) -> None:
        fields["modified"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.transaction(
            lambda db: db.execute(f"UPDATE executions SET {cols} WHERE arn = ?", (*fields.values(), arn)), write=True
        )

    def request_stop(self, arn: str) -> bool:
        """Mark an executing execution Stopping in one statement, so a runner finishing at the same
        moment is never overwritten; False when it was no longer executing."""
        cursor = self.transaction(
            lambda db: db.execute(
                "UPDATE executions SET status = 'Stopping', stop_requested = 1, modified = ? "
                "WHERE arn = ? AND status = 'Executing'",
                (time.time(), arn),
            ),
            write=True,
        )
        return cursor.rowcount == 1

    def finish_execution(self, arn: str, status: str, failure_reason: str | None) -> None:
        """Set a terminal status unless another party (a stop, a dead-runner check) already did."""
        self.transaction(
            lambda db: db.execute(
                "UPDATE executions SET status = ?, failure_reason = ?, modified = ?, runner_pid = NULL "
                "WHERE arn = ? AND status IN ('Executing', 'Stopping')",
                (status, failure_reason, time.time(), arn),
            ),
            write=True,
        )

    # Steps --------------------------------------------------------------------------------------

    def steps(self, arn: str) -> list[sqlite3.Row]:
        return self.transaction(
            lambda db: db.execute("SELECT * FROM steps WHERE execution_arn = ? ORDER BY start, name", (arn,)).fetchall()
        )

    def start_step(self, arn: str, name: str, step_type: str) -> float:
        """Record the step as Executing; returns its start time."""
        start = time.time()
        self.transaction(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO steps (execution_arn, name, type, status, start) VALUES (?, ?, ?, ?, ?)",
                (arn, name, step_type, "Executing", start),
            ),
            write=True,
        )
        return start

    def record_step(self, arn: str, record: dict[str, Any]) -> None:
        """Write a succeeded step from its completion record (the database had missed it)."""
        self.transaction(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO steps (execution_arn, name, type, status, start, end, metadata, properties)"
                " VALUES (?, ?, ?, 'Succeeded', ?, ?, ?, ?)",
                (
                    arn,
                    record["name"],
                    record["type"],
                    record["start"],
                    record["end"],
                    json.dumps(record["metadata"], sort_keys=True, default=str),
                    json.dumps(record["properties"], sort_keys=True, default=str),
                ),
            ),
            write=True,
        )

    def update_step(self, arn: str, name: str, **fields: Any) -> None:
        for key in ("metadata", "properties", "pids"):
            if key in fields:
                fields[key] = json.dumps(fields[key], sort_keys=True, default=str)
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.transaction(
            lambda db: db.execute(
                f"UPDATE steps SET {cols} WHERE execution_arn = ? AND name = ?", (*fields.values(), arn, name)
            ),
            write=True,
        )

    def end_step(self, arn: str, name: str, status: str, failure_reason: str | None = None, **fields: Any) -> None:
        fields.setdefault("end", time.time())
        self.update_step(arn, name, status=status, failure_reason=failure_reason, **fields)

    def end_running_steps(self, arn: str, status: str, failure_reason: str | None) -> None:
        self.transaction(
            lambda db: db.execute(
                "UPDATE steps SET status = ?, failure_reason = COALESCE(failure_reason, ?), end = ? "
                "WHERE execution_arn = ? AND status IN ('Starting', 'Executing', 'Stopping')",
                (status, failure_reason, time.time(), arn),
            ),
            write=True,
        )
