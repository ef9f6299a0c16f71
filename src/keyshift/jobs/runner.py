"""The worker loop: drive jobs phase by phase, batch by batch, under leases.

Several workers (threads, processes, machines on PostgreSQL) may drive the same job at once: batches
are claimed with leases and finished in the transaction of their effects, serial steps run under the
job lease and advance the phase with a guarded UPDATE. A worker that dies loses nothing: its leases
expire and another worker continues from the committed checkpoint.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from keyshift.db.models import Job
from keyshift.db.sqlite_turns import background_writes
from keyshift.errors import InternalError, KeyshiftError
from keyshift.jobs import leases, store
from keyshift.jobs.context import BatchContext, StepContext
from keyshift.jobs.leases import LeaseClock, LeaseLost, wall_now
from keyshift.jobs.plans import Plan, plan_for
from keyshift.runtime import Runtime
from keyshift.stores.job_keys import release as release_job_keys

log = logging.getLogger("keyshift.jobs")

ProgressFn = Callable[[dict[str, Any]], None]


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        rt: Runtime,
        *,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.05,
        lease_clock: LeaseClock = wall_now,
        hooks: dict[str, Any] | None = None,
        on_progress: ProgressFn | None = None,
        pace: float = 0.0,
        health_between_batches: bool = False,
    ) -> None:
        self.rt = rt
        self.owner = owner or worker_id()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.lease_clock = lease_clock
        self.hooks = hooks or {}
        self.on_progress = on_progress
        # After each batch, pause `pace` x the batch's duration (a job's params["pace"] overrides).
        self.pace = pace
        # Run the health monitor when due after each batch (`keyshift worker`): a long job does not
        # hold it off, and its pinned keys stay vouched for (stores.job_keys).
        self.health_between_batches = health_between_batches

    # -- one job -------------------------------------------------------------------------------
    def run_job(self, job_id: str, *, timeout: float | None = None) -> str:
        """Work on a job until it reaches a final state or failed; return that state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state, progressed = self.step(job_id)
            if state not in ("pending", "running"):
                release_job_keys(self.rt, job_id)
                self._progress(job_id)
                return state
            if progressed:
                self._progress(job_id)
            else:
                if deadline is not None and time.monotonic() > deadline:
                    return state
                time.sleep(self.poll_seconds)

    def step(self, job_id: str) -> tuple[str, bool]:
        """Do one unit of work on the job. Returns (state, whether anything was done).

        All of it is background work: on SQLite its write transactions (the job's bookkeeping as
        well as its batches) let waiting foreground writers go first."""
        with background_writes():
            return self._step(job_id)

    def _step(self, job_id: str) -> tuple[str, bool]:
        rt = self.rt
        with rt.transaction() as session:
            job = store.find_job(session, job_id)
            if job.state == "pending":
                store.mark_started(session, job.id, rt.clock.now())
                return "running", True
            if job.state != "running":
                return job.state, False
            plan = plan_for(job.kind)
            if job.cancel_requested:
                if plan.cancellable(job):
                    plan.rollback(rt, session, job)
                    store.mark_cancelled(session, job.id, rt.clock.now())
                    _audit(rt, session, job, "job.cancelled")
                    return "cancelled", True
                session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=False))
            phases = plan.phases(job)
            if job.phase >= len(phases):
                store.mark_succeeded(session, job.id, rt.clock.now())
                _audit(rt, session, job, "job.succeeded")
                return "succeeded", True
            phase = phases[job.phase]
            session.expunge(job)
        try:
            if phase.batched:
                return "running", self._batched(plan, job, phase)
            return "running", self._serial(plan, job, phase)
        except LeaseLost:
            return "running", False
        except KeyshiftError as err:
            self._fail(job, err)
            return "failed", True
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            self._fail(job, InternalError(f"internal error in {phase.name}: {type(exc).__name__}"))
            return "failed", True

    def _batched(self, plan: Plan, job: Job, phase: Any) -> bool:
        rt = self.rt
        now = self.lease_clock()
        if not job.phase_planned:
            with rt.transaction() as session:
                if not leases.acquire_job_lease(session, job.id, self.owner, self.lease_seconds, now):
                    return False
                fresh = store.find_job(session, job.id)
                if fresh.phase != job.phase or fresh.phase_planned or fresh.state != "running":
                    leases.release_job_lease(session, job.id, self.owner)
                    return True
                specs = plan.plan_phase(rt, session, fresh, phase)
                leases.add_batches(session, job.id, job.phase, specs)
                fresh.phase_planned = True
                fresh.checkpoint = store.rate_mark(
                    {**(fresh.checkpoint or {}), "phase_name": phase.name}, phase.name, fresh.items_done
                )
                leases.release_job_lease(session, job.id, self.owner)
            return True
        with rt.transaction() as session:
            claim = leases.claim_batch(session, job.id, job.phase, self.owner, self.lease_seconds, now)
        if claim is not None:
            ctx = BatchContext(job, phase, claim, self.lease_seconds, self.lease_clock, hooks=self.hooks)
            started = time.monotonic()
            try:
                plan.run_batch(rt, ctx)
            except LeaseLost:
                raise
            except BaseException:
                # Give the batch back at once so a resume (or another worker) need not wait.
                try:
                    with rt.transaction() as session:
                        leases.release_batch(session, claim)
                finally:
                    pass
                raise
            if not ctx.finished:
                raise InternalError(f"plan {job.kind} did not finish batch {claim.seq} of {phase.name}")
            if self.health_between_batches:
                self._health()
            pace = float(job.params.get("pace", self.pace))
            if pace > 0:  # leave the database to clients for a share of the time (duty cycle)
                time.sleep(min(5.0, (time.monotonic() - started) * pace))
            return True
        with rt.transaction() as session:
            counts = leases.phase_counts(session, job.id, job.phase)
            if counts.get("pending") or counts.get("leased"):
                return False  # others hold leases; wait for them to finish or expire
            if not leases.acquire_job_lease(session, job.id, self.owner, self.lease_seconds, now):
                return False
            result = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.phase == job.phase)
                .values(phase=job.phase + 1, phase_planned=False, lease_owner=None, lease_expires=None)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def _serial(self, plan: Plan, job: Job, phase: Any) -> bool:
        rt = self.rt
        with rt.transaction() as session:
            if not leases.acquire_job_lease(
                session, job.id, self.owner, self.lease_seconds, self.lease_clock()
            ):
                return False
            fresh = store.find_job(session, job.id)
            if fresh.phase != job.phase or fresh.state != "running":
                leases.release_job_lease(session, job.id, self.owner)
                return True
            fresh.checkpoint = {**(fresh.checkpoint or {}), "phase_name": phase.name}
            session.flush()
            session.expunge(fresh)
        ctx = StepContext(fresh, phase, self.owner, hooks=self.hooks)
        plan.run_step(rt, ctx)
        if not ctx.advanced:
            raise InternalError(f"plan {job.kind} did not advance past {phase.name}")
        with rt.transaction() as session:
            leases.release_job_lease(session, job.id, self.owner)
        return True

    def _health(self) -> None:
        from keyshift.control.monitor import monitor_due

        try:
            monitor_due(self.rt)
        except Exception:  # the monitor's own failure never fails the job; its next round retries
            log.exception("health monitor round failed between batches")

    def _fail(self, job: Job, err: KeyshiftError) -> None:
        rt = self.rt
        with rt.transaction() as session:
            if store.mark_failed(session, job.id, err.code, err.message, rt.clock.now()):
                _audit(rt, session, job, "job.failed", outcome="error", reason=f"{err.code}: {err.message}")

    def _progress(self, job_id: str) -> None:
        if self.on_progress is None:
            return
        with self.rt.transaction() as session:
            view = store.to_view(store.find_job(session, job_id))
        self.on_progress(view)

    # -- every job -------------------------------------------------------------------------------
    def run_once(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Drive every runnable job to an end (succeeded, failed, cancelled); then due maintenance."""
        from keyshift.jobs import schedule

        results: dict[str, str] = {}
        seen: set[str] = set()
        while True:
            with self.rt.transaction() as session:
                ids = [i for i in store.runnable_jobs(session) if i not in seen]
            if not ids:
                break
            for job_id in ids:
                seen.add(job_id)
                results[job_id] = self.run_job(job_id, timeout=timeout)
        maintenance = schedule.run_due(self.rt)
        return {"jobs": results, "maintenance": maintenance}

    def run_forever(self, *, idle_seconds: float = 1.0, stop: Callable[[], bool] | None = None) -> None:
        while stop is None or not stop():
            out = self.run_once()
            if not out["jobs"]:
                time.sleep(idle_seconds)


def _audit(rt: Runtime, session: Any, job: Job, action: str, **kw: Any) -> None:
    from keyshift.control import audit_trail

    audit_trail.record(
        rt,
        session,
        action,
        target_type="job",
        target_id=job.id,
        tenant_id=job.tenant_id,
        details={"kind": job.kind, "environment": job.environment_id},
        **kw,
    )


def wait(rt: Runtime, job_id: str, *, timeout: float | None = None, work: bool = True, **kw: Any) -> str:
    """Block until the job ends. With work=True this process helps drive it (as a worker)."""
    if work:
        return Worker(rt, **kw).run_job(job_id, timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with rt.transaction() as session:
            state = store.find_job(session, job_id).state
        if state not in ("pending", "running"):
            return state
        if deadline is not None and time.monotonic() > deadline:
            return state
        time.sleep(0.2)
