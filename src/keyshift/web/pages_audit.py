"""Admin center: the admin audit trail, newest first, filtered by tenant, environment, actor, action
and time range, a page at a time (keyset on the audit row id, so pages do not shift while events
arrive). Who sees what follows the API: tenant-scoped callers only their tenant's events; another
tenant or its environment named in a filter answers like one that does not exist."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.control import audit_search, tenants
from keyshift.errors import KeyshiftError
from keyshift.web.pages import web_allow
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
FIELDS = ("tenant", "environment", "actor", "action", "since", "until", "requests")


@router.get("/audit")
def audit_page(
    request: Request,
    tenant: str | None = Query(None, max_length=200),
    environment: str | None = Query(None, max_length=200),
    actor: str | None = Query(None, max_length=200),
    action: str | None = Query(None, max_length=100),
    since: str | None = Query(None, max_length=64),
    until: str | None = Query(None, max_length=64),
    requests: str | None = Query(None, max_length=5),
    before: int | None = Query(None, ge=1, le=(1 << 62)),
    after: int | None = Query(None, ge=0, le=(1 << 62)),
    ctx: Ctx = web_allow("collection"),
) -> Response:
    raw = {"tenant": tenant, "environment": environment, "actor": actor, "action": action}
    raw |= {"since": since, "until": until, "requests": requests}
    given = {k: v.strip() for k, v in raw.items() if v and v.strip()}
    error: dict[str, str] | None = None
    status = 200
    result: dict[str, Any] = {"events": [], "next_before": None, "prev_after": None}
    try:
        flt = audit_search.AuditFilter(
            tenant_id=ctx.require_tenant(given["tenant"]) if "tenant" in given else None,
            environment_id=ctx.require_env(given["environment"])[0] if "environment" in given else None,
            actor=given.get("actor"),
            action=given.get("action"),
            since=audit_search.parse_bound("since", given.get("since")),
            until=audit_search.parse_bound("until", given.get("until")),
            include_requests="requests" in given,
        )
        result = audit_search.search(
            ctx.rt, flt, scope_tenant=ctx.tenant_filter, before=before, after=after, limit=PAGE_SIZE
        )
    except KeyshiftError as err:
        error = {"code": err.code, "message": err.message}
        status = err.http_status
    scope = ctx.tenant_filter
    visible = [t for t in tenants.list_tenants(ctx.rt) if scope is None or t.get("id") == scope]
    return page(
        request,
        "audit.html",
        status_code=status,
        events=result["events"],
        filters=given,
        error=error,
        tenants=visible,
        older_url=_url(given, before=result["next_before"]) if result["next_before"] else None,
        newer_url=_url(given, after=result["prev_after"]) if result["prev_after"] else None,
        newest_url=_url(given) if (before or after) else None,
    )


def _url(params: dict[str, str], **cursor: int) -> str:
    query = urlencode({**params, **cursor})
    return "/audit" + (f"?{query}" if query else "")
