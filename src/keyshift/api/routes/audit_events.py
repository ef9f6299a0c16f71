"""The admin audit trail a page at a time: newest first, filtered, keyset-paginated (the admin
center's audit page reads the same service). Scoped callers see their own tenant's events only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from keyshift.api.access import Ctx, allow
from keyshift.control import audit_search

router = APIRouter(tags=["audit trail"])


class Ref(BaseModel):
    id: str
    name: str | None = None


class AuditTarget(BaseModel):
    type: str
    id: str | None = None
    name: str | None = None


class AuditEvent(BaseModel):
    id: int
    at: str = Field(description="ISO 8601 UTC time with a Z")
    actor: str = Field(description="principal label, e.g. token:tok_...:tenant_admin")
    action: str
    target: AuditTarget
    tenant: Ref | None = None
    outcome: str
    reason: str | None = None
    details: dict[str, Any]


class AuditPage(BaseModel):
    events: list[AuditEvent]
    next_before: int | None = Field(description="pass as `before` for the next (older) page")
    prev_after: int | None = Field(description="pass as `after` for the previous (newer) page")


@router.get("/audit-trail/events", response_model=AuditPage, operation_id="audit_trail_events")
def audit_trail_events(
    tenant: str | None = Query(default=None, min_length=1, max_length=200),
    environment: str | None = Query(default=None, min_length=1, max_length=200),
    actor: str | None = Query(default=None, min_length=1, max_length=200),
    action: str | None = Query(default=None, min_length=1, max_length=100),
    since: str | None = Query(default=None, max_length=64, description="ISO 8601 time (inclusive)"),
    until: str | None = Query(default=None, max_length=64, description="ISO 8601 time (exclusive)"),
    before: int | None = Query(default=None, ge=1, le=(1 << 62)),
    after: int | None = Query(default=None, ge=0, le=(1 << 62)),
    limit: int = Query(default=audit_search.DEFAULT_PAGE, ge=1, le=audit_search.MAX_PAGE),
    include_requests: bool = Query(default=False, description="include the api.request rows"),
    ctx: Ctx = allow("collection"),
) -> dict[str, Any]:
    """Newest first; `before`/`after` are the cursors of the page answered before."""
    flt = audit_search.AuditFilter(
        tenant_id=ctx.require_tenant(tenant) if tenant is not None else None,
        environment_id=ctx.require_env(environment)[0] if environment is not None else None,
        actor=actor,
        action=action,
        since=audit_search.parse_bound("since", since),
        until=audit_search.parse_bound("until", until),
        include_requests=include_requests,
    )
    return audit_search.search(
        ctx.rt, flt, scope_tenant=ctx.tenant_filter, before=before, after=after, limit=limit
    )
