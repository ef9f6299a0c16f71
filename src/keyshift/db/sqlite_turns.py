"""Foreground writers first on SQLite: background jobs step aside while a client waits to write.

SQLite has one write lock per database file and no queue: a writer that finds it taken polls. A
job that writes back to back (a re-encrypting migration commits a chunk, encrypts the next, begins
again within tens of microseconds) leaves only short gaps, so a client polling for the lock keeps
missing them and its writes wait for many of the job's transactions.

Two per-database lock files next to the database (`<db>-writers`, 0600) carry one signal across
processes, "a writer is waiting":

* a writer whose first `BEGIN IMMEDIATE` finds the lock taken holds a *shared* `flock` on it while
  it polls (every `POLL_SECONDS` for the first `FAST_POLL_SECONDS`, then in growing steps);
* a background writer (a job's batch: `background_writes()`) probes the file with a non-blocking
  *exclusive* `flock` before it begins: while that fails, someone waits, and it sleeps in short
  steps, at most `YIELD_SECONDS` per transaction (so a steady stream of clients cannot stall the
  job for good) — its next transaction starts after theirs.

Everything is best effort and non-blocking: a lock file that cannot be opened (read-only
directory) turns the signal off and SQLite's own locking decides, as without it; `flock` locks die
with their process, so a killed writer leaves no stale signal. The probe and the waiting flag use
two different open files, so one process can be both a waiter and a background writer.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

# Retry without sleeping this long first, yielding the CPU between tries (a job's transaction is
# shorter; a sleep, even of zero, costs the timer slack, ~50 us, and more after a wake-up).
SPIN_SECONDS = 0.0015
# WAL pages after which a committing foreground connection checkpoints (SQLite's default is 1,000).
# The connection that commits past the threshold does the checkpoint (copy + fsync: a millisecond
# or more), and while readers keep the WAL from restarting it stays past the threshold, so every
# commit would try again. Background writes never checkpoint on commit; they checkpoint once
# every CHECKPOINT_EVERY transactions instead, keeping the WAL short while a job writes, so
# clients rarely reach their own threshold.
FOREGROUND_AUTOCHECKPOINT = 10_000
CHECKPOINT_EVERY = 64
# WAL frames from which a job's checkpoint that copied every frame goes on with a RESTART one.
# A WAL starts over only when a writer begins while every frame is copied and no reader is on it;
# under a job and clients that rarely happens by itself (a client commits while the job's PASSIVE
# checkpoint copies), and a WAL that never starts over soon passes FOREGROUND_AUTOCHECKPOINT. The
# RESTART copies what came meanwhile under the write lock (a few frames), so the next writer
# starts the WAL over: measured with an unpaced re-encrypting job, starts-over went from ~20 to
# ~60 per 20,000 rows and the WAL from 12,000 frames to under 6,500.
RESTART_FRAMES = 2_000
POLL_SECONDS = 0.00005
FAST_POLL_SECONDS = 0.005
MAX_POLL_SECONDS = 0.002
YIELD_SECONDS = 0.02
YIELD_STEP_SECONDS = 0.00005

_background: contextvars.ContextVar[bool] = contextvars.ContextVar("keyshift_background", default=False)


@contextlib.contextmanager
def background_writes() -> Iterator[None]:
    """Writes in this block step aside for waiting foreground writers (job batches)."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


def in_background() -> bool:
    return _background.get()


_commits = itertools.count(1)


def background_begins(dbapi_conn: Any) -> None:
    """Before a background write transaction (outside the lock): no checkpoint at its commit."""
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def background_ends(dbapi_conn: Any) -> None:
    """After it (outside the lock): the foreground threshold back; every CHECKPOINT_EVERY-th
    background transaction of this process checkpoints what readers allow (PASSIVE), then, past
    RESTART_FRAMES with every frame copied, lets the next writer start the WAL over."""
    try:
        dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={FOREGROUND_AUTOCHECKPOINT}")
        if next(_commits) % CHECKPOINT_EVERY == 0:
            busy, frames, copied = dbapi_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and frames >= RESTART_FRAMES and copied == frames:
                _restart(dbapi_conn)
    except sqlite3.Error:  # a checkpoint is an optimisation; the next one retries
        pass


def _restart(dbapi_conn: Any) -> None:
    """A RESTART checkpoint that never waits: the write lock and the readers are tried once (a
    reader still on the WAL: busy, nothing changes)."""
    busy_ms = int(dbapi_conn.execute("PRAGMA busy_timeout").fetchone()[0])
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        dbapi_conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")


class WriteTurns:
    """The "a writer is waiting" signal of one SQLite database file (see the module docstring)."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + "-writers"
        self._lock = threading.Lock()
        self._pid = -1
        self._wait_fd = -1
        self._probe_fd = -1
        self._waiting = 0  # threads of this process currently flagged as waiting

    def _fds(self) -> tuple[int, int]:
        if self._pid == os.getpid():
            return self._wait_fd, self._probe_fd
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: open files of its own
                try:
                    wait_fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    probe_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                except OSError:
                    wait_fd = probe_fd = -1
                self._wait_fd, self._probe_fd, self._waiting = wait_fd, probe_fd, 0
                self._pid = os.getpid()
            return self._wait_fd, self._probe_fd

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Flag this writer as waiting for the write lock while the block runs."""
        fd, _ = self._fds()
        if fd < 0:
            yield
            return
        with self._lock:
            self._waiting += 1
            if self._waiting == 1:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
                if self._waiting == 0:
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)

    def someone_waits(self) -> bool:
        """Whether a writer (of another process, or another thread here) waits for the lock."""
        _, fd = self._fds()
        if fd < 0:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def step_aside(self) -> None:
        """A background writer about to begin: let waiting writers go first (bounded)."""
        if not _background.get() or not self.someone_waits():
            return
        deadline = time.monotonic() + YIELD_SECONDS
        while time.monotonic() < deadline:
            time.sleep(YIELD_STEP_SECONDS)
            if not self.someone_waits():
                return


def poll_delays() -> Iterator[float]:
    """How long a waiting writer sleeps between attempts: short steps at first, then growing."""
    spin_until = time.monotonic() + SPIN_SECONDS
    while time.monotonic() < spin_until:
        yield 0.0  # retry at once: the lock usually frees within one short transaction
    waited = 0.0
    while waited < FAST_POLL_SECONDS:
        waited += POLL_SECONDS
        yield POLL_SECONDS
    delay = POLL_SECONDS
    while True:
        delay = min(delay * 2, MAX_POLL_SECONDS)
        yield delay
