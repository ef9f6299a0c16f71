"""Jobs (long operations run by `keyshift worker`)."""

from __future__ import annotations

from typing import Any

from keyshift.api.models.base import Out, Ref, Timestamp


class JobError(Out):
    code: str
    message: str


class Job(Out):
    id: str
    kind: str
    state: str
    environment: Ref | None
    tenant: Ref | None
    policy: Ref | None
    phase: str | None
    done: int
    total: int
    bytes_done: int
    bytes_total: int
    attempts: int
    rate: float | None
    rate_unit: str
    eta_seconds: float | None
    error: JobError | None
    params: dict[str, Any]
    created_by: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class UnlinkJob(Job):
    """The job that returns an environment to the platform key, with warnings about the customer
    key (it must stay usable for 30 days after the unlink)."""

    warnings: list[str]
