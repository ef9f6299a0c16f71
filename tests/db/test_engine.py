"""SQLite engine behaviour: write lock taken up front, fair hand-over between threads, short
polling behind another process's lock, and the same timeout as before when the lock never frees."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from keyshift.db import engine as engine_mod
from keyshift.db.engine import make_engine


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.begin() as c:
        c.execute(text("create table t (x integer)"))
    return eng


def test_gate_is_released_after_commit_and_after_rollback(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    with pytest.raises(ValueError), eng.begin() as c:
        c.execute(text("insert into t values (1)"))
        raise ValueError("roll back")
    # A leaked gate would make this wait GATE_TIMEOUT_SECONDS; it must be immediate.
    t0 = time.monotonic()
    for i in range(20):
        with eng.begin() as c:
            c.execute(text("insert into t values (:x)"), {"x": i})
    assert time.monotonic() - t0 < 5
    with eng.connect() as c:
        assert c.execute(text("select count(*) from t")).scalar() == 20


def test_threads_never_lose_a_write(tmp_path: Path) -> None:
    eng = _engine(tmp_path)

    def writer(n: int) -> None:
        for i in range(n):
            with eng.begin() as c:
                c.execute(text("insert into t values (:x)"), {"x": i})

    threads = [threading.Thread(target=writer, args=(200,)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with eng.connect() as c:
        assert c.execute(text("select count(*) from t")).scalar() == 800


def test_waits_briefly_behind_another_connections_lock(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.2, other.rollback).start()
    t0 = time.monotonic()
    with eng.begin() as c:
        c.execute(text("insert into t values (1)"))
    waited = time.monotonic() - t0
    assert 0.15 < waited < 2.0
    other.close()


def test_a_lock_that_never_frees_fails_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = _engine(tmp_path)
    monkeypatch.setattr(engine_mod, "BUSY_TIMEOUT_SECONDS", 0.3)
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Exception, match="locked"), eng.begin() as c:
            c.execute(text("insert into t values (1)"))
    finally:
        other.rollback()
        other.close()
    # Nothing was written, and the engine works again once the lock is free.
    with eng.begin() as c:
        c.execute(text("insert into t values (2)"))
    with eng.connect() as c:
        assert c.execute(text("select x from t")).scalars().all() == [2]
