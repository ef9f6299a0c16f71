"""The admin audit trail (scoped callers see their tenant's rows only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from keyshift.api.access import Ctx, allow
from keyshift.api.models.audit import AuditEvent
from keyshift.api.schemas import IsoTime
from keyshift.clock import parse_time
from keyshift.control import audit_trail

router = APIRouter(tags=["audit trail"])


@router.get("/audit-trail", response_model=list[AuditEvent])
def list_audit_trail(
    tenant: str | None = Query(default=None, max_length=200),
    since: IsoTime | None = Query(default=None, description="ISO 8601 time"),
    limit: int = Query(default=1000, ge=1, le=10000),
    ctx: Ctx = allow("collection"),
) -> list[dict[str, Any]]:
    tenant_id = ctx.require_tenant(tenant) if tenant is not None else ctx.tenant_filter
    when = parse_time(since) if since is not None else None
    return audit_trail.query(ctx.rt, tenant_id=tenant_id, since=when, limit=limit)
