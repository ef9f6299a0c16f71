"""Worker heartbeats in the state database, and the list `keyshift worker status` shows.

A running worker owns one `worker_heartbeats` row (id = its lease owner id): written at start,
refreshed every `interval` seconds by a small background thread, deleted on a clean stop. A row
whose heartbeat is older than its `ttl_seconds` (3 intervals by default) is a lost worker: it died,
hung or lost the database. Lost rows are reported (`--all`, metric `keyshift_workers{state="lost"}`)
and pruned after `PRUNE_AFTER`. Times are wall-clock, like leases: a frozen business clock must not
make every worker look alive or dead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import delete, select, update

from keyshift.db.models import Job, JobBatch, WorkerHeartbeat
from keyshift.jobs.leases import LeaseClock, wall_now
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

log = logging.getLogger("keyshift.worker")

PRUNE_AFTER = timedelta(hours=24)


def register(rt: Runtime, owner: str, *, ttl_seconds: float, now: datetime) -> None:
    with rt.transaction() as s:
        row = s.get(WorkerHeartbeat, owner)
        if row is None:
            s.add(
                WorkerHeartbeat(
                    id=owner,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    last_heartbeat_at=now,
                    ttl_seconds=ttl_seconds,
                    current_job=None,
                )
            )
        else:
            row.last_heartbeat_at, row.ttl_seconds = now, ttl_seconds


def beat(rt: Runtime, owner: str, *, current_job: str | None, now: datetime, ttl_seconds: float) -> None:
    """Refresh the worker's row (re-creating it if it was pruned meanwhile); prune long-lost rows."""
    with rt.transaction() as s:
        done = s.execute(
            update(WorkerHeartbeat)
            .where(WorkerHeartbeat.id == owner)
            .values(last_heartbeat_at=now, current_job=current_job, ttl_seconds=ttl_seconds)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            s.add(
                WorkerHeartbeat(
                    id=owner,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    last_heartbeat_at=now,
                    ttl_seconds=ttl_seconds,
                    current_job=current_job,
                )
            )
        s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_heartbeat_at < now - PRUNE_AFTER))


def remove(rt: Runtime, owner: str) -> None:
    with rt.transaction() as s:
        s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == owner))


def list_workers(
    rt: Runtime, *, include_lost: bool = False, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Workers with their liveness, current job and the leases they hold right now."""
    now = now or wall_now()
    with rt.transaction() as s:
        rows = list(s.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.started_at)))
        ids = [r.id for r in rows]
        job_leases: dict[str, list[str]] = {}
        batch_leases: dict[str, list[str]] = {}
        if ids:
            for job_id, owner in s.execute(
                select(Job.id, Job.lease_owner).where(Job.lease_owner.in_(ids), Job.lease_expires > now)
            ):
                job_leases.setdefault(str(owner), []).append(job_id)
            for job_id, seq, phase, owner in s.execute(
                select(JobBatch.job_id, JobBatch.seq, JobBatch.phase, JobBatch.lease_owner).where(
                    JobBatch.lease_owner.in_(ids),
                    JobBatch.state == "leased",
                    JobBatch.lease_expires > now,
                )
            ):
                batch_leases.setdefault(str(owner), []).append(f"{job_id}/phase{phase}/batch{seq}")
    out: list[dict[str, Any]] = []
    for r in rows:
        age = (now - r.last_heartbeat_at).total_seconds()
        live = age <= r.ttl_seconds
        if not live and not include_lost:
            continue
        out.append(
            {
                "id": r.id,
                "host": r.host,
                "pid": r.pid,
                "started_at": iso_z(r.started_at),
                "last_heartbeat_at": iso_z(r.last_heartbeat_at),
                "heartbeat_age_seconds": round(max(age, 0.0), 3),
                "state": "live" if live else "lost",
                "current_job": r.current_job,
                "job_leases": sorted(job_leases.get(r.id, [])),
                "batch_leases": sorted(batch_leases.get(r.id, [])),
            }
        )
    return out


def counts(rt: Runtime, *, now: datetime | None = None) -> dict[str, int]:
    """{"live": n, "lost": m} (for the metrics collector)."""
    now = now or wall_now()
    out = {"live": 0, "lost": 0}
    with rt.transaction() as s:
        for last, ttl in s.execute(select(WorkerHeartbeat.last_heartbeat_at, WorkerHeartbeat.ttl_seconds)):
            out["live" if (now - last).total_seconds() <= ttl else "lost"] += 1
    return out


class Heartbeat:
    """`with Heartbeat(rt, worker.owner): worker.run_forever(...)` — beats while the block runs.

    `current_job` is what the worker says it is driving (set by its progress callback). A beat that
    fails (database briefly away) is logged and retried at the next interval; the row then ages, and
    that is exactly what the status and the alert should show.
    """

    def __init__(
        self,
        rt: Runtime,
        owner: str,
        *,
        interval: float = 5.0,
        ttl_seconds: float | None = None,
        clock: LeaseClock = wall_now,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        self.rt = rt
        self.owner = owner
        self.interval = interval
        self.ttl_seconds = ttl_seconds if ttl_seconds is not None else 3 * interval
        self.clock = clock
        self.on_beat = on_beat
        self.current_job: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_now(self) -> None:
        beat(
            self.rt, self.owner, current_job=self.current_job, now=self.clock(), ttl_seconds=self.ttl_seconds
        )
        if self.on_beat is not None:
            self.on_beat()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat_now()
            except Exception as exc:
                log.warning("worker heartbeat failed: %s", type(exc).__name__)

    def start(self) -> Heartbeat:
        register(self.rt, self.owner, ttl_seconds=self.ttl_seconds, now=self.clock())
        self._thread = threading.Thread(target=self._loop, name="keyshift-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        try:
            remove(self.rt, self.owner)
        except Exception as exc:  # the row will simply age out
            log.warning("could not remove the worker heartbeat: %s", type(exc).__name__)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
