"""Admin center: jobs list and the live job progress page (small vanilla JS polls /progress)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.jobs import store
from keyshift.web.pages import web_allow
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/jobs")
def jobs_page(request: Request, ctx: Ctx = web_allow("collection")) -> Response:
    scope = ctx.tenant_filter
    with ctx.rt.transaction() as s:
        rows = [
            store.to_view(j) for j in store.list_jobs(s, limit=500) if scope is None or j.tenant_id == scope
        ]
    return page(request, "jobs.html", rows=rows[:100])


@router.get("/jobs/{job}")
def job_page(request: Request, job: str, ctx: Ctx = web_allow("job")) -> Response:
    with ctx.rt.transaction() as s:
        view = store.to_view(store.find_job(s, job))
    return page(request, "job.html", job=view)


@router.get("/jobs/{job}/progress")
def job_progress(job: str, ctx: Ctx = web_allow("job")) -> dict[str, Any]:
    with ctx.rt.transaction() as s:
        v = store.to_view(store.find_job(s, job))
    keys = ("id", "kind", "state", "done", "total", "error", "environment", "phase")
    return {k: v[k] for k in (*keys, "rate", "rate_unit", "eta_seconds")}
