"""Engines and sessions. SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL is used as is."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_SECONDS = 30.0
GATE_TIMEOUT_SECONDS = 30.0


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
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            cur.close()

        _gate_writers(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _begin_immediate(dbapi_conn: Any) -> None:
    """BEGIN IMMEDIATE, polling briefly while another process holds the write lock.

    SQLite's busy handler waits in growing sleeps (up to 100 ms each), which makes a writer
    queued behind another process's millisecond transaction wait ten times longer than needed.
    Here the wait is ours: short sleeps (0.1 ms doubling to 2 ms) up to the same 30 s timeout.
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        delay, deadline = 0.0001, time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")


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
    held: set[int] = set()  # ids of DBAPI connections whose transaction holds the gate
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        got = gate.acquire(timeout=GATE_TIMEOUT_SECONDS)
        try:
            _begin_immediate(dbapi_conn)
        except BaseException:
            if got:
                gate.release()
            raise
        if got:
            held.add(id(dbapi_conn))

    def _release(dbapi_conn: Any) -> None:
        # Called with the pool's proxy or with the raw DBAPI connection, depending on the path.
        key = id(getattr(dbapi_conn, "dbapi_connection", None) or dbapi_conn)
        if key in held:
            held.discard(key)
            gate.release()

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
