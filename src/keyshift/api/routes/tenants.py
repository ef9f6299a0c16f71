"""Tenants: list, create (operator), show (with BYOK status), the operator's BYOK flag."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from keyshift.api.access import Ctx, allow
from keyshift.api.models.tenant import Tenant, TenantSummary
from keyshift.api.schemas import ByokFlagRemove, TenantCreate
from keyshift.control import tenants

router = APIRouter(tags=["tenants"])


@router.get("/tenants", response_model=list[TenantSummary])
def list_tenants(ctx: Ctx = allow("collection")) -> list[dict[str, Any]]:
    rows = tenants.list_tenants(ctx.rt)
    scope = ctx.tenant_filter
    return [r for r in rows if scope is None or r.get("id") == scope]


@router.post("/tenants", response_model=Tenant, status_code=status.HTTP_201_CREATED)
def create_tenant(body: TenantCreate, ctx: Ctx = allow("operator", write=True)) -> dict[str, Any]:
    return tenants.create_tenant(ctx.rt, body.name, byok=body.byok)


@router.get("/tenants/{tenant}", response_model=Tenant)
def show_tenant(tenant: str, ctx: Ctx = allow("tenant")) -> dict[str, Any]:
    return tenants.show_tenant(ctx.rt, tenant)


@router.post("/tenants/{tenant}/byok-flag/remove", response_model=Tenant)
def remove_byok_flag(
    tenant: str, body: ByokFlagRemove, ctx: Ctx = allow("operator", write=True)
) -> dict[str, Any]:
    """Operator only: turn the tenant's legacy BYOK feature off, recording the ticket reference."""
    return tenants.byok_flag_remove(ctx.rt, tenant, ticket=body.ticket)


@router.post("/tenants/{tenant}/byok-flag/add", response_model=Tenant)
def add_byok_flag(
    tenant: str, body: ByokFlagRemove, ctx: Ctx = allow("operator", write=True)
) -> dict[str, Any]:
    """Operator only: turn a legacy BYOK tenant's BYOK feature back on (refused once it finalized);
    the body is the same as for removal: the ticket reference."""
    return tenants.byok_flag_add(ctx.rt, tenant, ticket=body.ticket)
