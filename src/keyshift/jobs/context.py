"""What a plan's batch or step gets from the worker: the job, its claim, and the commit hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyshift.db.models import Job
from keyshift.jobs import leases
from keyshift.jobs.leases import Claim, LeaseClock, LeaseLost

if TYPE_CHECKING:
    from keyshift.jobs.plans import Phase


@dataclass
class BatchContext:
    job: Job
    phase: Phase
    claim: Claim
    lease_seconds: float
    lease_clock: LeaseClock
    finished: bool = False
    hooks: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        return self.claim.spec

    def finish(self, session: Session, items: int, nbytes: int = 0) -> None:
        """Mark the batch done in the caller's transaction (raises LeaseLost if it was taken)."""
        leases.finish_batch(session, self.claim, items, nbytes, self.lease_clock())
        self.finished = True

    def renew(self, session: Session) -> None:
        if not leases.renew_batch(session, self.claim, self.lease_seconds, self.lease_clock()):
            raise LeaseLost(f"lease on batch {self.claim.seq} of job {self.claim.job_id} was lost")

    def point(self, name: str) -> None:
        """A named point inside a batch (tests use it to crash a worker at a precise moment)."""
        hook = self.hooks.get("point")
        if hook is not None:
            hook(name)


@dataclass
class StepContext:
    job: Job
    phase: Phase
    owner: str
    advanced: bool = False
    hooks: dict[str, Any] = field(default_factory=dict)

    def advance(self, session: Session, checkpoint: dict[str, Any] | None = None) -> None:
        """Move the job past this step in the caller's transaction (guarded: only once)."""
        values: dict[str, Any] = {"phase": self.job.phase + 1, "phase_planned": False}
        if checkpoint:
            current = session.execute(select(Job.checkpoint).where(Job.id == self.job.id)).scalar_one()
            values["checkpoint"] = {**(current or {}), **checkpoint}
        result = session.execute(
            update(Job)
            .where(Job.id == self.job.id, Job.phase == self.job.phase, Job.lease_owner == self.owner)
            .values(**values)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(f"job {self.job.id} moved on without us")
        self.advanced = True

    def point(self, name: str) -> None:
        hook = self.hooks.get("point")
        if hook is not None:
            hook(name)


def merge_checkpoint(session: Session, job_id: str, values: dict[str, Any]) -> dict[str, Any]:
    current = session.execute(select(Job.checkpoint).where(Job.id == job_id)).scalar_one()
    merged = {**(current or {}), **values}
    session.execute(update(Job).where(Job.id == job_id).values(checkpoint=merged))
    return merged
