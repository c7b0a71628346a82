"""SQLite persistence for the dev server.

One writer connection (guarded by a lock, one transaction per request) and one
reader connection, so reads from tests never wait behind a long ``executemany``
more than SQLite's WAL mode requires.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EventStore", "Row", "StoreClosedError"]

#: One stored event: (uuid, event, distinct_id, session_id, timestamp, api_key,
#: received_at, full event JSON).
Row = tuple[str, str, str, str | None, str, str, str, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    event       TEXT NOT NULL,
    distinct_id TEXT,
    session_id  TEXT,
    timestamp   TEXT,
    api_key     TEXT,
    received_at TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_event_idx ON events (event);
CREATE INDEX IF NOT EXISTS events_distinct_id_idx ON events (distinct_id);
CREATE INDEX IF NOT EXISTS events_session_id_idx ON events (session_id);
CREATE INDEX IF NOT EXISTS events_timestamp_idx ON events (timestamp);
"""

_INSERT = (
    "INSERT OR IGNORE INTO events "
    "(uuid, event, distinct_id, session_id, timestamp, api_key, received_at, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class StoreClosedError(RuntimeError):
    """Raised when the store is used after :meth:`EventStore.close`."""


def _where(
    event: str | None, distinct_id: str | None, session_id: str | None
) -> tuple[str, list[Any]]:
    """Build a ``WHERE`` clause (possibly empty) and its parameters for the filters given."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("event", event), ("distinct_id", distinct_id),
                          ("session_id", session_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class EventStore:
    """Event table in a SQLite file (WAL, ``synchronous=NORMAL``), deduplicated on ``uuid``.

    With ``path=None`` the database lives in a private temporary directory that is
    removed by :meth:`close` (or at interpreter exit if ``close`` is never called).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._tmpdir: str | None = None
        if path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="posthog-devserver-")
            resolved = Path(self._tmpdir) / "events.sqlite3"
            # Safety net for a server that is never stopped: drop the files at exit.
            self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
                self, shutil.rmtree, self._tmpdir, True
            )
        else:
            resolved = Path(path).expanduser()
            resolved.parent.mkdir(parents=True, exist_ok=True)
            self._finalizer = None
        self.path = str(resolved)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.executescript(_SCHEMA)
            self._reader = self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        """Open a connection usable from any thread (callers serialise with a lock)."""
        conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def insert(self, rows: Sequence[Row]) -> int:
        """Insert rows in one transaction, ignoring duplicate uuids; return how many were new."""
        if not rows:
            return 0
        with self._write_lock:
            conn = self._writer
            if conn is None or self._closed:
                raise StoreClosedError("event store is closed")
            before = conn.total_changes
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return conn.total_changes - before

    def _select(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run a read query on the reader connection and return all rows."""
        with self._read_lock:
            conn = self._reader
            if conn is None or self._closed:
                raise StoreClosedError("event store is closed")
            return conn.execute(sql, params).fetchall()

    def events_json(
        self,
        event: str | None = None,
        distinct_id: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Return the stored JSON text of matching events, oldest (first received) first."""
        where, params = _where(event, distinct_id, session_id)
        sql = f"SELECT data FROM events{where} ORDER BY id"
        if limit is not None:
            if limit < 0:
                raise ValueError("limit must be >= 0")
            sql += " LIMIT ?"
            params.append(limit)
        return [row[0] for row in self._select(sql, params)]

    def events(
        self,
        event: str | None = None,
        distinct_id: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Return matching events as dicts, oldest (first received) first."""
        loads = json.loads
        return [loads(text) for text in self.events_json(event, distinct_id, session_id, limit)]

    def count(
        self,
        event: str | None = None,
        distinct_id: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Return how many stored events match the filters."""
        where, params = _where(event, distinct_id, session_id)
        rows = self._select(f"SELECT COUNT(*) FROM events{where}", params)
        return int(rows[0][0])

    def clear(self) -> int:
        """Delete every stored event; return how many were deleted."""
        with self._write_lock:
            conn = self._writer
            if conn is None or self._closed:
                raise StoreClosedError("event store is closed")
            cursor = conn.execute("DELETE FROM events")
            return int(cursor.rowcount)

    def close(self) -> None:
        """Close both connections and remove a temporary database; safe to call twice."""
        with self._write_lock, self._read_lock:
            self._closed = True
            for conn in (self._writer, self._reader):
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error:  # pragma: no cover - closing never matters here
                        pass
            self._writer = self._reader = None
        if self._finalizer is not None:
            self._finalizer()
