"""Jobs: list, show (progress for the live progress bar), resume, cancel."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from keyshift.api.access import Ctx, allow
from keyshift.api.models.job import Job
from keyshift.jobs import store

router = APIRouter(tags=["jobs"])

JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]


@router.get("/jobs", response_model=list[Job])
def list_jobs(
    state: JobState | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    ctx: Ctx = allow("collection"),
) -> list[dict[str, Any]]:
    scope = ctx.tenant_filter
    with ctx.rt.transaction() as session:
        # Scoped callers: fetch generously, then keep their tenant's jobs only.
        rows = store.list_jobs(session, state=state, limit=limit if scope is None else 5000)
        views = [store.to_view(j) for j in rows if scope is None or j.tenant_id == scope]
    return views[:limit]


@router.get("/jobs/{job}", response_model=Job)
def show_job(job: str, ctx: Ctx = allow("job")) -> dict[str, Any]:
    with ctx.rt.transaction() as session:
        return store.to_view(store.find_job(session, job))


@router.post("/jobs/{job}/resume", response_model=Job)
def resume_job(job: str, ctx: Ctx = allow("job", write=True)) -> dict[str, Any]:
    return store.resume(ctx.rt, job)


@router.post("/jobs/{job}/cancel", response_model=Job)
def cancel_job(job: str, ctx: Ctx = allow("job", write=True)) -> dict[str, Any]:
    return store.request_cancel(ctx.rt, job)
