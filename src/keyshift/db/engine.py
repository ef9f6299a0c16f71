"""Engines and sessions. SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL is used as is.

Locking (docs/ARCHITECTURE.md): on SQLite a write transaction takes the write lock up front
(`BEGIN IMMEDIATE`, behind an in-process gate with immediate hand-over); a read transaction
(`read_transaction`) is a plain deferred `BEGIN` and never takes the write lock (WAL readers do
not block writers nor wait for them). On PostgreSQL there is no pre-ping round trip per checkout:
a pooled connection is checked with a zero-timeout poll of its socket (a server-side close makes
it readable), and a dead one is replaced before use.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from keyshift.db.sqlite_turns import (
    FOREGROUND_AUTOCHECKPOINT,
    WriteTurns,
    background_begins,
    background_ends,
    in_background,
    poll_delays,
)

BUSY_TIMEOUT_SECONDS = 30.0
GATE_TIMEOUT_SECONDS = 30.0
READ_OPTION = "keyshift_read"  # execution option marking a read-only transaction

_gates: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_turns: weakref.WeakKeyDictionary[Engine, WriteTurns | None] = weakref.WeakKeyDictionary()


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin, so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA wal_autocheckpoint={FOREGROUND_AUTOCHECKPOINT}")
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            cur.close()

        _gate_writers(engine)
        return engine
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        _check_on_checkout(engine)
    elif engine.dialect.name != "postgresql":
        raise ValueError(f"unsupported database {engine.dialect.name!r}")
    return engine


def _check_on_checkout(engine: Engine) -> None:
    """Replace a pooled PostgreSQL connection the server has closed, without a round trip."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if not pg_alive(dbapi_conn):
            raise exc.DisconnectionError("the server closed this connection")


def pg_alive(conn: Any) -> bool:
    """False if the server closed this idle psycopg connection. A zero-timeout poll of its socket,
    no round trip: an idle connection's socket is readable only if the server sent something
    unasked (a notice, or its goodbye and then end-of-file, which libpq reports as an error)."""
    from psycopg import pq

    if conn.closed:
        return False
    pgconn = conn.pgconn
    try:
        for _ in range(4):
            if not select.select([pgconn.socket], [], [], 0)[0]:
                break
            pgconn.consume_input()  # raises once it reads end-of-file
        else:
            return False
        while pgconn.notifies() is not None:  # drop LISTEN payloads (none of ours)
            pass
    except Exception:
        return False
    return bool(pgconn.status == pq.ConnStatus.OK and not pgconn.is_busy())


def _begin_immediate(dbapi_conn: Any, turns: WriteTurns | None = None) -> None:
    """BEGIN IMMEDIATE, polling while another process holds the write lock.

    SQLite's busy handler waits in growing sleeps (up to 100 ms each), which makes a writer
    queued behind another process's millisecond transaction wait ten times longer than needed.
    Here the wait is ours: short steps first, then growing ones (`sqlite_turns.poll_delays`), up to
    the same 30 s timeout — flagged as waiting, so background job writers step aside meanwhile.
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        with turns.waiting() if turns is not None else contextlib.nullcontext():
            for delay in poll_delays():
                if delay:
                    time.sleep(delay)
                else:  # retry at once, letting the holder run first if it shares this CPU
                    os.sched_yield()
                try:
                    dbapi_conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")


def _write_turns(engine: Engine) -> WriteTurns | None:
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return WriteTurns(os.path.abspath(path))


def _gate_writers(engine: Engine) -> None:
    """Every SQLite transaction takes the write lock up front (BEGIN IMMEDIATE), so two processes
    never interleave a read-modify-write. Inside one process, threads first queue on a gate:
    SQLite's own busy handler sleeps in growing steps (1, 2, 5, 10 ms ...) while it waits, so
    a thread that merely queues behind another's short transaction would otherwise lose
    milliseconds; the gate hands over at once. The gate is an optimisation only: if it cannot
    be had within the busy timeout (e.g. a thread nesting two transactions), the transaction
    goes ahead and SQLite's own locking decides, exactly as without it.
    """
    gate = threading.Lock()
    _gates[engine] = gate
    turns = _turns[engine] = _write_turns(engine)
    held: set[int] = set()  # ids of DBAPI connections whose transaction holds the gate
    background: set[int] = set()  # ids of DBAPI connections in a background write transaction
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        if conn.get_execution_options().get(READ_OPTION):
            dbapi_conn.execute("BEGIN")  # deferred: a WAL reader, never the write lock
            return
        if in_background():
            background_begins(dbapi_conn)
            background.add(id(dbapi_conn))
        if turns is not None:
            turns.step_aside()
        got = gate.acquire(timeout=GATE_TIMEOUT_SECONDS)
        try:
            _begin_immediate(dbapi_conn, turns)
        except BaseException:
            if got:
                gate.release()
            if id(dbapi_conn) in background:  # no transaction began: the foreground threshold back
                background.discard(id(dbapi_conn))
                background_ends(dbapi_conn)
            raise
        if got:
            held.add(id(dbapi_conn))

    def _release(dbapi_conn: Any) -> None:
        # Called with the pool's proxy or with the raw DBAPI connection, depending on the path.
        raw = getattr(dbapi_conn, "dbapi_connection", None) or dbapi_conn
        key = id(raw)
        if key in held:
            held.discard(key)
            gate.release()
        if key in background:
            background.discard(key)
            background_ends(raw)

    def do_commit(dbapi_conn: Any) -> None:
        try:
            commit(dbapi_conn)
        finally:
            _release(dbapi_conn)

    def do_rollback(dbapi_conn: Any) -> None:
        try:
            rollback(dbapi_conn)
        finally:
            _release(dbapi_conn)

    # Replacing methods on this one dialect instance: mypy checks the assignment against the unbound
    # method (with `self`), which a plain function standing in for the bound method never matches.
    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]


@contextmanager
def sqlite_write(engine: Engine, dbapi_conn: Any) -> Iterator[None]:
    """A write transaction on a plain sqlite3 connection of this engine, with the same gate and
    BEGIN IMMEDIATE hand-over as the engine's own transactions; commit on success."""
    gate = _gates.get(engine)
    turns = _turns.get(engine)
    if turns is not None:
        turns.step_aside()
    got = gate.acquire(timeout=GATE_TIMEOUT_SECONDS) if gate is not None else False
    background = in_background()
    if background:
        background_begins(dbapi_conn)
    try:
        _begin_immediate(dbapi_conn, turns)
        try:
            yield
        except BaseException:
            dbapi_conn.execute("ROLLBACK")
            raise
        dbapi_conn.execute("COMMIT")
    finally:
        if got and gate is not None:
            gate.release()
        if background:
            background_ends(dbapi_conn)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


@contextmanager
def read_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work that only reads: on SQLite a deferred BEGIN (no write lock, no writer
    gate), so readers never queue behind a writer. Writing in it is a programming error (SQLite
    would then have to upgrade the lock and may fail with "database is locked")."""
    session = factory()
    try:
        with session.begin():
            session.connection(execution_options={READ_OPTION: True})
            yield session
    finally:
        session.close()
