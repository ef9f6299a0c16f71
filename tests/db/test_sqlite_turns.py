"""Foreground writers first on SQLite (`db.sqlite_turns`): a writer waiting for the write lock is
seen by every process, a background (job) writer steps aside while it waits, the signal dies with
its holder, and without a usable lock file everything behaves as before."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from keyshift.db import sqlite_turns
from keyshift.db.engine import make_engine
from keyshift.db.sqlite_turns import WriteTurns, background_writes


def _until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.001)
    return False


def test_a_waiting_writer_is_seen_by_another_handle_and_only_while_it_waits(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    waiter, other = WriteTurns(db), WriteTurns(db)
    assert not other.someone_waits()
    with waiter.waiting():
        assert other.someone_waits()
        assert waiter.someone_waits()  # the probe is another open file, even in the same handle
        with waiter.waiting():  # nested (two threads of one process): still one flag
            assert other.someone_waits()
        assert other.someone_waits()
    assert not other.someone_waits()
    assert oct(os.stat(db + "-writers").st_mode & 0o777) == "0o600"


def test_an_engine_writer_behind_another_process_lock_flags_itself_waiting(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.begin() as c:
        c.execute(text("create table t (x integer)"))
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    probe = WriteTurns(str(tmp_path / "x.db"))
    done = threading.Event()

    def write() -> None:
        with eng.begin() as c:
            c.execute(text("insert into t values (1)"))
        done.set()

    th = threading.Thread(target=write)
    th.start()
    try:
        assert _until(probe.someone_waits), "the blocked writer never flagged itself"
        assert not done.is_set()
    finally:
        holder.rollback()
        holder.close()
    th.join(10)
    assert done.is_set()
    assert _until(lambda: not probe.someone_waits())
    with eng.connect() as c:
        assert c.execute(text("select count(*) from t")).scalar() == 1


def test_a_background_writer_waits_for_a_waiting_writer_then_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_turns, "YIELD_SECONDS", 30.0)
    db = str(tmp_path / "x.db")
    turns, client = WriteTurns(db), WriteTurns(db)
    flagged, release = threading.Event(), threading.Event()

    def wait_for_lock() -> None:
        with client.waiting():
            flagged.set()
            release.wait(10)

    th = threading.Thread(target=wait_for_lock)
    th.start()
    assert flagged.wait(10)
    order: list[str] = []

    def background() -> None:
        with background_writes():
            turns.step_aside()
        order.append("background began")

    bg = threading.Thread(target=background)
    bg.start()
    time.sleep(0.05)
    turns.step_aside()  # a foreground writer never steps aside
    order.append("client began")
    release.set()
    th.join(10)
    bg.join(10)
    assert order == ["client began", "background began"]


def test_a_background_writer_steps_aside_at_most_the_yield_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_turns, "YIELD_SECONDS", 0.05)
    db = str(tmp_path / "x.db")
    turns, client = WriteTurns(db), WriteTurns(db)
    with client.waiting(), background_writes():  # a waiter that never gets going
        t0 = time.monotonic()
        turns.step_aside()
        assert time.monotonic() - t0 < 5  # bounded: the job is never stalled for good


def test_the_flag_dies_with_a_killed_process(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            child = WriteTurns(db)
            with child.waiting():
                os.write(write, b"w")
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"w"
    probe = WriteTurns(db)
    assert probe.someone_waits()
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert not probe.someone_waits()
    os.close(read)


def test_without_a_usable_lock_file_writes_go_on_as_before(tmp_path: Path) -> None:
    turns = WriteTurns(str(tmp_path / "missing-dir" / "x.db"))
    with turns.waiting():
        assert not turns.someone_waits()
    with background_writes():
        turns.step_aside()  # nothing to wait for
    eng = make_engine("sqlite://")  # in memory: no lock file at all
    with eng.begin() as c:
        c.execute(text("create table t (x integer)"))
        c.execute(text("insert into t values (1)"))


def test_background_transactions_never_checkpoint_on_commit_and_checkpoint_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A committing connection past the WAL threshold checkpoints (copy + fsync). Clients get a
    high threshold; a job's transactions none, and a PASSIVE checkpoint every CHECKPOINT_EVERY."""
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(sqlite_turns, "_commits", __import__("itertools").count(1))
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.begin() as c:
        c.execute(text("create table t (x integer)"))
        assert c.execute(text("pragma wal_autocheckpoint")).scalar() == sqlite_turns.FOREGROUND_AUTOCHECKPOINT
    seen: list[int] = []
    checkpoints: list[str] = []
    for i in range(8):
        with background_writes(), eng.begin() as c:
            seen.append(int(c.execute(text("pragma wal_autocheckpoint")).scalar() or 0))
            c.execute(text("insert into t values (:x)"), {"x": i})
            raw = c.connection.dbapi_connection
            raw.set_trace_callback(checkpoints.append)  # type: ignore[union-attr]
        raw.set_trace_callback(None)  # type: ignore[union-attr]
    assert seen == [0] * 8
    assert sum("wal_checkpoint" in s for s in checkpoints) == 2  # the 4th and the 8th
    with eng.begin() as c:  # the same pooled connection serves a client again: the client threshold
        assert c.execute(text("pragma wal_autocheckpoint")).scalar() == sqlite_turns.FOREGROUND_AUTOCHECKPOINT
        assert c.execute(text("select count(*) from t")).scalar() == 8


def _background_inserts(eng, n: int, trace: list[str]) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        with background_writes(), eng.begin() as c:
            c.execute(text("insert into t values (:x, randomblob(3000))"), {"x": i})
            raw = c.connection.dbapi_connection
            raw.set_trace_callback(trace.append)  # type: ignore[union-attr]
        raw.set_trace_callback(None)  # type: ignore[union-attr]


def _wal_frames(db: Path) -> int:
    probe = sqlite3.connect(db, isolation_level=None)
    try:
        return int(probe.execute("pragma wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        probe.close()


def test_a_job_checkpoint_that_copied_every_frame_restarts_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAL starts over only when a writer begins while every frame is copied and no reader is
    on it. Under a job and clients that rarely happens by itself (a client commits while the
    job's PASSIVE checkpoint copies), and a WAL that never starts over stays past the clients'
    checkpoint threshold, so every client commit checkpoints. So once the WAL holds
    RESTART_FRAMES, a job checkpoint that copied everything goes on with a RESTART checkpoint
    (copies what came meanwhile under the write lock; the next writer starts the WAL over) —
    and not while a reader holds frames back."""
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(sqlite_turns, "RESTART_FRAMES", 40)
    monkeypatch.setattr(sqlite_turns, "_commits", __import__("itertools").count(1))
    db = tmp_path / "x.db"
    eng = make_engine(f"sqlite:///{db}")
    with eng.begin() as c:
        c.execute(text("create table t (x integer, b blob)"))
    _background_inserts(eng, 2, [])
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("select count(*) from t").fetchone() == (2,)  # a snapshot on the WAL
    trace: list[str] = []
    _background_inserts(eng, 97, trace)  # checkpoints copy up to the reader's snapshot only
    assert sum("wal_checkpoint(PASSIVE)" in s for s in trace) == 24
    assert not any("RESTART" in s for s in trace)
    assert _wal_frames(db) > 97
    reader.execute("COMMIT")
    reader.close()
    _background_inserts(eng, 1, trace)  # the 100th: its checkpoint copies every frame
    assert sum("wal_checkpoint(RESTART)" in s for s in trace) == 1
    with eng.begin() as c:  # the next writer starts the WAL over
        c.execute(text("insert into t values (100, null)"))
    assert _wal_frames(db) < 10
    with eng.begin() as c:
        assert c.execute(text("select count(*) from t")).scalar() == 101
        assert c.execute(text("pragma busy_timeout")).scalar() == 30_000


def test_a_reader_on_the_wal_makes_the_restart_give_up_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame copied but a reader still on the WAL: the restart is refused at once (busy)
    instead of waiting the busy timeout, the reader keeps its snapshot, the WAL is left as it
    was and the connection gets its busy timeout back."""
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sqlite_turns, "RESTART_FRAMES", 10)
    db = tmp_path / "x.db"
    eng = make_engine(f"sqlite:///{db}")
    with eng.begin() as c:
        c.execute(text("create table t (x integer, b blob)"))
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 10**9)
    _background_inserts(eng, 20, [])
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("select count(*) from t").fetchone() == (20,)  # on the WAL's last frame
    frames = _wal_frames(db)
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 1)
    job = sqlite3.connect(db, isolation_level=None)
    job.execute("pragma busy_timeout=30000")
    trace: list[str] = []
    job.set_trace_callback(trace.append)
    started = time.monotonic()
    sqlite_turns.background_ends(job)
    assert time.monotonic() - started < 5  # not the 30 s busy timeout
    assert any("wal_checkpoint(RESTART)" in s for s in trace)
    assert job.execute("pragma busy_timeout").fetchone() == (30_000,)
    assert _wal_frames(db) == frames >= 20
    assert reader.execute("select count(*) from t").fetchone() == (20,)
    reader.execute("COMMIT")
    reader.close()
    job.close()
