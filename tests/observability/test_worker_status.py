"""Worker heartbeats: `keyshift worker status` lists a live worker (host, pid, started, last
heartbeat, current job, leases) and drops a dead one once its heartbeat expires."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keyshift.jobs import heartbeat, leases, store
from keyshift.runtime import Runtime


def _cli(home: Path, db_url: str | None, *args: str) -> list[str]:
    base = [sys.executable, "-c", "from keyshift.cli.main import main; main()", "--home", str(home)]
    if db_url:
        base += ["--database-url", db_url]
    return [*base, *args]


def _status(home: Path, db_url: str | None, *extra: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        _cli(home, db_url, "--json", "worker", "status", *extra), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _until(cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_status_shows_a_live_worker_and_drops_it_after_its_heartbeat_expires(
    rt: Runtime, home: Path, db_url: str | None
) -> None:
    proc = subprocess.Popen(
        _cli(home, db_url, "worker", "--heartbeat-seconds", "0.3", "--idle-seconds", "0.1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rows = _until(lambda: [r for r in _status(home, db_url) if r["pid"] == proc.pid])
        (row,) = rows
        assert row["host"] == socket.gethostname()[:255] and row["state"] == "live"
        assert row["id"].startswith(f"{socket.gethostname()[:40]}:{proc.pid}:")
        first = row["last_heartbeat_at"]
        assert datetime.fromisoformat(row["started_at"]) <= datetime.fromisoformat(first)
        # It keeps beating.
        _until(
            lambda: [
                r for r in _status(home, db_url) if r["pid"] == proc.pid and r["last_heartbeat_at"] != first
            ]
        )
        assert heartbeat.counts(rt)["live"] == 1
        proc.send_signal(signal.SIGKILL)  # no goodbye: only the heartbeat's age tells
        proc.wait(timeout=30)
        _until(lambda: not [r for r in _status(home, db_url) if r["pid"] == proc.pid])
        lost = [r for r in _status(home, db_url, "--all") if r["pid"] == proc.pid]
        assert [r["state"] for r in lost] == ["lost"]
        assert heartbeat.counts(rt) == {"live": 0, "lost": 1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_worker_stopped_cleanly_removes_its_row(rt: Runtime, home: Path, db_url: str | None) -> None:
    proc = subprocess.Popen(
        _cli(home, db_url, "worker", "--heartbeat-seconds", "0.3", "--idle-seconds", "0.1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: [r for r in _status(home, db_url) if r["pid"] == proc.pid])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert _status(home, db_url, "--all") == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_names_the_current_job_and_the_leases_held(rt: Runtime) -> None:
    now = datetime.now(UTC)
    with rt.transaction() as s:
        job = store.create_job(rt, s, "link")
        job_id = job.id
        assert leases.acquire_job_lease(s, job_id, "host:1:abc", 30, now)
    beat = heartbeat.Heartbeat(rt, "host:1:abc", interval=10)
    beat.current_job = job_id
    with beat:
        beat.beat_now()
        (row,) = heartbeat.list_workers(rt)
        assert row["current_job"] == job_id and row["job_leases"] == [job_id] and row["batch_leases"] == []
        # A heartbeat older than the ttl: not listed, except with include_lost.
        later = now + timedelta(seconds=31)
        assert heartbeat.list_workers(rt, now=later) == []
        assert [r["state"] for r in heartbeat.list_workers(rt, include_lost=True, now=later)] == ["lost"]
    assert heartbeat.list_workers(rt, include_lost=True) == []  # removed on a clean stop


def test_long_lost_rows_are_pruned_by_a_live_worker(rt: Runtime) -> None:
    old = datetime.now(UTC) - heartbeat.PRUNE_AFTER - timedelta(minutes=1)
    heartbeat.register(rt, "dead:1:x", ttl_seconds=15, now=old)
    assert [r["id"] for r in heartbeat.list_workers(rt, include_lost=True)] == ["dead:1:x"]
    heartbeat.beat(rt, "live:2:y", current_job=None, now=datetime.now(UTC), ttl_seconds=15)
    assert [r["id"] for r in heartbeat.list_workers(rt, include_lost=True)] == ["live:2:y"]
