"""Plain DBAPI connections for the data plane's hot paths (record reads and batch writes).

The ORM session costs more than the query itself for a point read: a Session per call, a new SQL
expression, pool checkout with its events, and on PostgreSQL BEGIN + SELECT + COMMIT. Here:

* Connections come from the engine once (so they carry its connect-time settings: SQLite
  pragmas, PostgreSQL options such as `search_path`), are detached from its pool and kept in a
  small LIFO list of idle connections (list pop/append: no lock).
* Reads run in autocommit: on SQLite a lone SELECT under WAL is its own read transaction and never
  takes the write lock; on PostgreSQL it is one round trip.
* Writes run in one explicit transaction: on SQLite through the engine's writer gate and
  `BEGIN IMMEDIATE` hand-over (`db.engine.sqlite_write`), on PostgreSQL BEGIN ... COMMIT.
* PostgreSQL connections run with the session time zone 'UTC' (rows' times need no conversion).
* No pre-ping. A PostgreSQL connection idle for IDLE_CHECK_AFTER seconds or more is checked for a
  server-side close with a zero-timeout poll of its socket (no round trip; one busy thread reusing
  its connection back to back skips even that syscall); a statement that still meets a dropped
  connection is retried once on a fresh one. A write is retried only if the failure came
  before COMMIT was sent, so a retry can never apply a write twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Engine

from keyshift.db.engine import pg_alive, sqlite_write

T = TypeVar("T")
MAX_IDLE = 8
IDLE_CHECK_AFTER = 0.5  # seconds idle after which a PostgreSQL connection's socket is polled


class DirectDB:
    """Detached DBAPI connections of one engine, for statements written in the engine's dialect."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.sqlite = engine.dialect.name == "sqlite"
        self._idle: list[tuple[Any, float]] = []  # (connection, monotonic time it went idle)
        self._closed = False
        self._lock = threading.Lock()  # only for close()
        if self.postgres:
            import psycopg

            self._op_error: type[BaseException] = psycopg.OperationalError
        else:
            import sqlite3

            self._op_error = sqlite3.OperationalError

    def sql(self, text: str) -> str:
        """A statement written with `?` placeholders, in this driver's paramstyle."""
        return text.replace("?", "%s") if self.postgres else text

    # -- connections ---------------------------------------------------------------------------
    def _new(self) -> Any:
        fairy = self.engine.raw_connection()
        conn: Any = fairy.dbapi_connection
        fairy.detach()  # ours now: the pool forgets it (and frees its slot)
        if self.postgres:
            conn.autocommit = True
            # Times come back in the session's zone. Under 'UTC' psycopg hands out datetimes whose
            # tzinfo *is* datetime.UTC, so readers need no per-row zone conversion (the instants
            # are the same under any zone: the columns are timestamptz).
            conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def _take(self) -> Any:
        idle = self._idle
        while True:
            try:
                conn, since = idle.pop()  # one tuple: atomic under the GIL, no lock
            except IndexError:
                return self._new()
            if not self.postgres or time.monotonic() - since < IDLE_CHECK_AFTER or pg_alive(conn):
                return conn
            _close(conn)

    def _give(self, conn: Any) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE or (self.postgres and conn.closed):
            _close(conn)
        else:
            self._idle.append((conn, time.monotonic()))

    def _dropped(self, conn: Any, exc: BaseException) -> bool:
        """Did this error come from a connection the server dropped?"""
        if not self.postgres or not isinstance(exc, self._op_error):
            return False
        from psycopg import pq

        return bool(conn.closed or conn.pgconn.status != pq.ConnStatus.OK)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while self._idle:
                _close(self._idle.pop()[0])

    # -- statements ----------------------------------------------------------------------------
    def fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """All rows of one read statement (autocommit; retried once on a dropped connection)."""
        for attempt in (0, 1):
            conn = self._take()
            try:
                rows = conn.execute(sql, params).fetchall()
            except BaseException as exc:
                if self._dropped(conn, exc):
                    _close(conn)
                    if attempt == 0:
                        continue
                else:
                    self._give(conn)
                raise
            self._give(conn)
            return rows  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    def read(self, work: Callable[[Any], T]) -> T:
        """Several reads on one connection, in one read transaction (SQLite: deferred, no write
        lock; PostgreSQL: one REPEATABLE READ READ ONLY snapshot)."""
        for attempt in (0, 1):
            conn = self._take()
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if self.postgres else "BEGIN")
                try:
                    result = work(conn)
                finally:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if self._dropped(conn, exc):
                    _close(conn)
                    if attempt == 0:
                        continue
                else:
                    _rollback_quietly(conn)
                    self._give(conn)
                raise
            self._give(conn)
            return result
        raise AssertionError("unreachable")

    def write(self, work: Callable[[Any], T]) -> T:
        """Run `work(conn)` in one write transaction; commit if it returns, roll back if it raises.

        Retried once on a fresh connection if PostgreSQL dropped the connection before COMMIT was
        sent (nothing was applied then). `work` must be safe to run again from the start.
        """
        for attempt in (0, 1):
            conn = self._take()
            committing = False
            try:
                if self.sqlite:
                    with sqlite_write(self.engine, conn):
                        result = work(conn)
                        committing = True
                else:
                    conn.execute("BEGIN")
                    try:
                        result = work(conn)
                    except BaseException:
                        _rollback_quietly(conn)
                        raise
                    committing = True
                    conn.execute("COMMIT")
            except BaseException as exc:
                if self._dropped(conn, exc):
                    _close(conn)
                    if attempt == 0 and not committing:
                        continue
                else:
                    self._give(conn)
                raise
            self._give(conn)
            return result
        raise AssertionError("unreachable")


def _rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):  # no transaction open, or the connection is gone
        conn.execute("ROLLBACK")


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()
