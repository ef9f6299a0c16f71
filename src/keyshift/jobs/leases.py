"""Batch and job leases.

A worker claims one pending batch (or one whose lease expired) with a guarded UPDATE; on
PostgreSQL the candidate is first selected `FOR UPDATE SKIP LOCKED` so concurrent workers on
several machines pass each other instead of queueing; on SQLite the write transaction (BEGIN
IMMEDIATE) already serialises claimers. A batch is finished by an UPDATE that only succeeds while
the claimer still holds the lease, in the same transaction as the batch's effects: if the lease
was lost (expired and re-claimed) the effects roll back, so no batch is applied twice.

Lease times are wall-clock (`lease_now`), not the injectable business clock: a lease is
infrastructure, and a frozen KEYSHIFT_NOW must not stop leases from ever expiring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from keyshift.db.models import Job, JobBatch
from keyshift.errors import ConflictError

LeaseClock = Callable[[], datetime]


def wall_now() -> datetime:
    return datetime.now(UTC)


class LeaseLost(ConflictError):
    """Our lease expired and another worker took the batch: the caller's effects must roll back."""

    code = "lease_lost"


@dataclass(frozen=True)
class Claim:
    batch_id: int
    job_id: str
    phase: int
    seq: int
    spec: dict[str, Any]
    owner: str


def add_batches(session: Session, job_id: str, phase: int, specs: Sequence[dict[str, Any]]) -> None:
    for seq, spec in enumerate(specs):
        session.add(
            JobBatch(
                job_id=job_id,
                phase=phase,
                seq=seq,
                spec=spec,
                state="pending",
                attempts=0,
                items=0,
                bytes=0,
            )
        )
    session.flush()


def _claimable(job_id: str, phase: int, now: datetime) -> Any:
    return and_(
        JobBatch.job_id == job_id,
        JobBatch.phase == phase,
        or_(
            JobBatch.state == "pending",
            and_(JobBatch.state == "leased", JobBatch.lease_expires < now),
        ),
    )


def claim_batch(
    session: Session, job_id: str, phase: int, owner: str, lease_seconds: float, now: datetime
) -> Claim | None:
    """Lease the next claimable batch of a phase, or None if none is claimable right now."""
    stmt = (
        select(JobBatch.id)
        .where(_claimable(job_id, phase, now))
        .order_by(JobBatch.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    batch_id = session.scalars(stmt).first()
    if batch_id is None:
        return None
    expires = now + timedelta(seconds=lease_seconds)
    result = session.execute(
        update(JobBatch)
        .where(JobBatch.id == batch_id, _claimable(job_id, phase, now))
        .values(state="leased", lease_owner=owner, lease_expires=expires, attempts=JobBatch.attempts + 1)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    row = session.get(JobBatch, batch_id)
    assert row is not None
    session.refresh(row)
    return Claim(row.id, row.job_id, row.phase, row.seq, dict(row.spec), owner)


def finish_batch(session: Session, claim: Claim, items: int, nbytes: int, now: datetime) -> None:
    """Mark the batch done and add its progress to the job; LeaseLost if we no longer hold it."""
    result = session.execute(
        update(JobBatch)
        .where(
            JobBatch.id == claim.batch_id,
            JobBatch.state == "leased",
            JobBatch.lease_owner == claim.owner,
        )
        .values(state="done", items=items, bytes=nbytes, finished_at=now, lease_expires=None)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise LeaseLost(f"lease on batch {claim.seq} of job {claim.job_id} was lost")
    session.execute(
        update(Job)
        .where(Job.id == claim.job_id)
        .values(items_done=Job.items_done + items, bytes_done=Job.bytes_done + nbytes, updated_at=now)
    )


def renew_batch(session: Session, claim: Claim, lease_seconds: float, now: datetime) -> bool:
    result = session.execute(
        update(JobBatch)
        .where(JobBatch.id == claim.batch_id, JobBatch.lease_owner == claim.owner, JobBatch.state == "leased")
        .values(lease_expires=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_batch(session: Session, claim: Claim) -> None:
    session.execute(
        update(JobBatch)
        .where(JobBatch.id == claim.batch_id, JobBatch.lease_owner == claim.owner, JobBatch.state == "leased")
        .values(state="pending", lease_owner=None, lease_expires=None)
    )


def phase_counts(session: Session, job_id: str, phase: int) -> dict[str, int]:
    rows = session.execute(
        select(JobBatch.state, func.count())
        .where(JobBatch.job_id == job_id, JobBatch.phase == phase)
        .group_by(JobBatch.state)
    ).all()
    return {state: int(n) for state, n in rows}


def acquire_job_lease(session: Session, job_id: str, owner: str, lease_seconds: float, now: datetime) -> bool:
    """Take the job's serial lease (planning, cutover). Re-entrant for the same owner."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(Job.lease_owner.is_(None), Job.lease_owner == owner, Job.lease_expires < now),
        )
        .values(lease_owner=owner, lease_expires=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def holds_job_lease(session: Session, job_id: str, owner: str) -> bool:
    row = session.execute(select(Job.lease_owner).where(Job.id == job_id)).first()
    return row is not None and row[0] == owner


def release_job_lease(session: Session, job_id: str, owner: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner)
        .values(lease_owner=None, lease_expires=None)
    )
