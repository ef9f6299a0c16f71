"""Job rows: creation, lookup, views and the state machine.

States: pending -> running -> succeeded | failed | cancelled; failed -> running on resume.
`running_job_for(session, env_id)` answers the "no other job running on it" precondition: a job
that is pending, running or failed (resumable, still holding the environment) counts.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyshift.db.models import Job, JobBatch
from keyshift.db.types import new_id
from keyshift.errors import ConflictError, KeyshiftError, NotFoundError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

ACTIVE_STATES = ("pending", "running", "failed")
FINAL_STATES = ("succeeded", "cancelled")
STATES = ("pending", "running", "succeeded", "failed", "cancelled")
# What a batched phase counts, for its rate ("12,000 rows/s").
RATE_UNITS = {
    "rewrap": "DEKs",
    "reencrypt": "rows",
    "move_audit": "events",
    "return_audit": "events",
    "move_files": "files",
    "return_files": "files",
}


def create_job(
    rt: Runtime,
    session: Session,
    kind: str,
    *,
    environment_id: str | None = None,
    tenant_id: str | None = None,
    policy_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """Add a pending job inside the caller's transaction (with the checks that justified it)."""
    if environment_id is not None:
        other = running_job_for(session, environment_id)
        if other is not None:
            raise ConflictError(
                f"job {other.id} ({other.kind}, {other.state}) already holds this environment; "
                "wait for it, resume it or cancel it",
                code="job_running",
            )
    job = Job(
        id=new_id("job"),
        kind=kind,
        state="pending",
        tenant_id=tenant_id,
        environment_id=environment_id,
        policy_id=policy_id,
        params=params or {},
        phase=0,
        phase_planned=False,
        items_done=0,
        items_total=0,
        bytes_done=0,
        bytes_total=0,
        checkpoint={},
        attempts=0,
        cancel_requested=False,
        created_by=rt.principal,
        created_at=rt.clock.now(),
        updated_at=rt.clock.now(),
    )
    session.add(job)
    session.flush()
    return job


def running_job_for(session: Session, env_id: str) -> Job | None:
    """The job currently holding an environment (pending, running or failed-and-resumable)."""
    return session.scalars(
        select(Job)
        .where(Job.environment_id == env_id, Job.state.in_(ACTIVE_STATES))
        .order_by(Job.created_at)
        .limit(1)
    ).first()


def find_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found", code="job_not_found")
    return job


def list_jobs(
    session: Session, *, state: str | None = None, environment_id: str | None = None, limit: int = 200
) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if environment_id is not None:
        stmt = stmt.where(Job.environment_id == environment_id)
    return list(session.scalars(stmt))


def runnable_jobs(session: Session, limit: int = 50) -> list[str]:
    """Ids of jobs a worker may work on, oldest first."""
    stmt = (
        select(Job.id)
        .where(Job.state.in_(("pending", "running")))
        .order_by(Job.created_at, Job.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def _refs(job: Job) -> dict[str, dict[str, Any] | None]:
    from sqlalchemy.orm import object_session

    from keyshift.db.models import Environment, Policy, Tenant

    session = object_session(job)
    out: dict[str, dict[str, Any] | None] = {}
    for key, model, ref in (
        ("environment", Environment, job.environment_id),
        ("tenant", Tenant, job.tenant_id),
        ("policy", Policy, job.policy_id),
    ):
        row = session.get(model, ref) if session is not None and ref else None
        name = getattr(row, "name", None)
        if name and key == "policy":  # a deleted policy's row keeps `<name>~deleted~<id>`
            name = name.split("~deleted~", 1)[0]
        out[key] = {"id": ref, "name": name} if ref else None
    return out


def rate_mark(checkpoint: dict[str, Any] | None, phase: str, items_done: int) -> dict[str, Any]:
    """The checkpoint with the start of a rate measurement: this phase, now (wall clock), done."""
    return {**(checkpoint or {}), "rate_phase": phase, "rate_since": time.time(), "rate_base": items_done}


def progress(job: Job, now: float | None = None) -> dict[str, Any]:
    """Items per second of the running batched phase since it started (or the job resumed), and
    the time left at that rate. None when not measurable (not running, a serial step, no progress
    yet). Wall clock: a rate is about real elapsed time, not the business clock."""
    cp = job.checkpoint or {}
    phase = cp.get("phase_name")
    out: dict[str, Any] = {
        "rate": None,
        "rate_unit": RATE_UNITS.get(str(phase), "items"),
        "eta_seconds": None,
    }
    if job.state != "running" or phase is None or cp.get("rate_phase") != phase:
        return out
    elapsed = (time.time() if now is None else now) - float(cp.get("rate_since") or 0)
    done = job.items_done - int(cp.get("rate_base") or 0)
    if elapsed <= 0 or done <= 0:
        return out
    rate = done / elapsed
    out["rate"] = rate
    out["eta_seconds"] = max(0, job.items_total - job.items_done) / rate
    return out


def to_view(job: Job) -> dict[str, Any]:
    error = None
    if job.error_code is not None:
        error = {"code": job.error_code, "message": job.error_message or ""}
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        # References are {"id", "name"} like everywhere else (docs/API.md); names need the session.
        **_refs(job),
        "phase": job.checkpoint.get("phase_name"),
        "done": job.items_done,
        "total": job.items_total,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "attempts": job.attempts,
        **progress(job),
        "error": error,
        "params": job.params,
        "created_by": job.created_by,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    return iso_z(value) if value is not None else None


# -- state transitions (each an UPDATE guarded by the expected state) ----------------------------


def _transition(session: Session, job_id: str, from_states: tuple[str, ...], values: dict[str, Any]) -> bool:
    result = session.execute(update(Job).where(Job.id == job_id, Job.state.in_(from_states)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_started(session: Session, job_id: str, now: datetime) -> bool:
    return _transition(
        session,
        job_id,
        ("pending",),
        {"state": "running", "started_at": now, "attempts": Job.attempts + 1, "updated_at": now},
    )


def mark_succeeded(session: Session, job_id: str, now: datetime) -> bool:
    return _transition(
        session,
        job_id,
        ("running",),
        {"state": "succeeded", "finished_at": now, "updated_at": now, "lease_owner": None},
    )


def mark_failed(session: Session, job_id: str, code: str, message: str, now: datetime) -> bool:
    ok = _transition(
        session,
        job_id,
        ("running", "pending"),
        {
            "state": "failed",
            "error_code": code,
            "error_message": message[:2000],
            "finished_at": now,
            "updated_at": now,
            "lease_owner": None,
            "lease_expires": None,
        },
    )
    if ok:
        release_batches(session, job_id)
    return ok


def mark_cancelled(session: Session, job_id: str, now: datetime) -> bool:
    ok = _transition(
        session,
        job_id,
        ("pending", "running", "failed"),
        {"state": "cancelled", "finished_at": now, "updated_at": now, "lease_owner": None},
    )
    if ok:
        release_batches(session, job_id)
    return ok


def release_batches(session: Session, job_id: str) -> None:
    """Give every leased, unfinished batch of the job back (its effects were not committed)."""
    session.execute(
        update(JobBatch)
        .where(JobBatch.job_id == job_id, JobBatch.state == "leased")
        .values(state="pending", lease_owner=None, lease_expires=None)
    )


def resume(rt: Runtime, job_id: str) -> dict[str, Any]:
    """failed -> running: continue from the checkpoint (done batches stay done)."""
    try:
        return _resume(rt, job_id)
    except KeyshiftError as err:
        _refused(rt, "job.resume", job_id, err)
        raise


def _refused(rt: Runtime, action: str, job_id: str, err: KeyshiftError) -> None:
    from keyshift.control import audit_trail

    audit_trail.record_failure(rt, action, err, target_type="job", target_id=str(job_id)[:200])


def _resume(rt: Runtime, job_id: str) -> dict[str, Any]:
    from keyshift.control import audit_trail

    with rt.transaction() as session:
        job = find_job(session, job_id)
        if job.state != "failed":
            raise ConflictError(
                f"job {job.id} is {job.state}; only a failed job can be resumed", code="job_not_failed"
            )
        now = rt.clock.now()
        _transition(
            session,
            job.id,
            ("failed",),
            {
                "state": "running",
                "error_code": None,
                "error_message": None,
                "finished_at": None,
                "attempts": Job.attempts + 1,
                "updated_at": now,
                # the rate counts from the resume, not across the time the job lay failed
                "checkpoint": rate_mark(
                    job.checkpoint, str(job.checkpoint.get("phase_name")), job.items_done
                ),
            },
        )
        audit_trail.record(
            rt, session, "job.resume", target_type="job", target_id=job.id, tenant_id=job.tenant_id
        )
        session.flush()
        session.refresh(job)
        return to_view(job)


def request_cancel(rt: Runtime, job_id: str) -> dict[str, Any]:
    try:
        return _request_cancel(rt, job_id)
    except KeyshiftError as err:
        _refused(rt, "job.cancel", job_id, err)
        raise


def _request_cancel(rt: Runtime, job_id: str) -> dict[str, Any]:
    """Cancel a job. A pending or failed job stops at once (its plan rolls back what it started);
    a running job is flagged and stops at the next batch boundary. A job past its point of no
    return (e.g. after cutover) cannot be cancelled."""
    from keyshift.control import audit_trail
    from keyshift.jobs.plans import plan_for

    with rt.transaction() as session:
        job = find_job(session, job_id)
        if job.state in FINAL_STATES:
            raise ConflictError(f"job {job.id} is already {job.state}", code="job_finished")
        plan = plan_for(job.kind)
        if not plan.cancellable(job):
            raise ConflictError(
                f"job {job.id} is past its point of no return ({job.checkpoint.get('phase_name')}); "
                "let it finish or resume it",
                code="job_not_cancellable",
            )
        now = rt.clock.now()
        if job.state in ("pending", "failed"):
            plan.rollback(rt, session, job)
            mark_cancelled(session, job.id, now)
        else:
            session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True, updated_at=now))
        audit_trail.record(
            rt, session, "job.cancel", target_type="job", target_id=job.id, tenant_id=job.tenant_id
        )
        session.flush()
        session.refresh(job)
        return to_view(job)


def resolve_job_id(session: Session, text: str) -> str:
    """Accept a full id or a unique prefix."""
    job = session.get(Job, text)
    if job is not None:
        return job.id
    rows = list(session.scalars(select(Job.id).where(Job.id.startswith(text, autoescape=True)).limit(2)))
    if len(rows) == 1:
        return rows[0]
    raise NotFoundError(f"job {text!r} not found", code="job_not_found")
