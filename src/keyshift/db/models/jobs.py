"""Persisted jobs: one row per long operation, one row per batch of work with its lease.

A job moves pending -> running -> succeeded | failed | cancelled (failed -> running on resume). Its
work is split into phases; a batched phase is planned once into `job_batches` rows that workers claim
with an expiring lease, so a worker that dies mid-batch loses nothing and another one picks the batch
up once the lease has expired. A batch is marked done in the same transaction as its effects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keyshift.db.base import Base
from keyshift.db.types import UTCDateTime


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created", "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # link | unlink | swap | rotate | restore | ...
    state: Mapped[str] = mapped_column(String(20), default="pending")
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    environment_id: Mapped[str | None] = mapped_column(String(40), index=True)
    policy_id: Mapped[str | None] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Index of the phase the job is in (see the plan's phase list) and whether it has been planned.
    phase: Mapped[int] = mapped_column(Integer, default=0)
    phase_planned: Mapped[bool] = mapped_column(Boolean, default=False)
    items_done: Mapped[int] = mapped_column(BigInteger, default=0)
    items_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Lease for the job's serial steps (planning a phase, cutover); batches have their own leases.
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobBatch(Base):
    __tablename__ = "job_batches"
    __table_args__ = (
        UniqueConstraint("job_id", "phase", "seq"),
        Index("ix_job_batches_job_phase_state", "job_id", "phase", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    phase: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | leased | done
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
