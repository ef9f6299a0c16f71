"""Admin center: the jobs list (environment and error columns, names rather than ids), the live job
page (phase, rate, a progress bar that reads full only once the job succeeded) with Resume and
Cancel where the job and the caller's role allow them. A small vanilla script polls /progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.jobs import overview, store
from keyshift.web.pages import csrf_field, see_other, web_allow, web_form
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)
LIST_LIMIT = 100


def _view(session: Any, job: Any) -> dict[str, Any]:
    return {**store.to_view(job), **overview.overview(session, job)}


@router.get("/jobs")
def jobs_page(request: Request, ctx: Ctx = web_allow("collection")) -> Response:
    scope = ctx.tenant_filter
    with ctx.rt.transaction() as s:
        jobs = [j for j in store.list_jobs(s, limit=2000) if scope is None or j.tenant_id == scope]
        rows = [_view(s, j) for j in jobs[:LIST_LIMIT]]
    return page(request, "jobs.html", rows=rows)


@router.get("/jobs/{job}")
def job_page(request: Request, job: str, ctx: Ctx = web_allow("job")) -> Response:
    with ctx.rt.transaction() as s:
        view = _view(s, store.find_job(s, job))
    return page(request, "job.html", job=view)


@router.get("/jobs/{job}/progress")
def job_progress(job: str, ctx: Ctx = web_allow("job")) -> dict[str, Any]:
    with ctx.rt.transaction() as s:
        v = _view(s, store.find_job(s, job))
    keys = ("id", "kind", "state", "done", "total", "error", "environment", "phase")
    more = ("phase_number", "phase_count", "fraction", "resumable", "cancellable")
    return {k: v[k] for k in (*keys, "rate", "rate_unit", "eta_seconds", *more)}


@router.post("/jobs/{job}/resume")
def job_resume(request: Request, job: str, csrf: str = csrf_field(), ctx: Ctx = web_form("job")) -> Response:
    """A failed job continues from its checkpoint (the service audits it)."""
    view = store.resume(ctx.rt, job)
    return see_other(f"/jobs/{view['id']}")


@router.post("/jobs/{job}/cancel")
def job_cancel(request: Request, job: str, csrf: str = csrf_field(), ctx: Ctx = web_form("job")) -> Response:
    """Cancel before the job's point of no return (refused after it, with the reason)."""
    view = store.request_cancel(ctx.rt, job)
    return see_other(f"/jobs/{view['id']}")
