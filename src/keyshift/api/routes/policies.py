"""Enterprise policies: create, list, show, update, delete, health; linking environments runs as a
job and answers 202 Accepted with the job's URL (Location) and Retry-After."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from keyshift.api.access import Ctx, allow
from keyshift.api.schemas import PolicyCreate, PolicyUpdate
from keyshift.control import policies

router = APIRouter(tags=["policies"])


@router.get("/policies")
def list_policies(tenant: str | None = None, ctx: Ctx = allow("collection")) -> list[dict[str, Any]]:
    tid = ctx.require_tenant(tenant) if tenant is not None else ctx.tenant_filter
    return policies.list_policies(ctx.rt, tenant=tid)


@router.post("/policies", status_code=status.HTTP_201_CREATED)
def create_policy(body: PolicyCreate, ctx: Ctx = allow("collection", write=True)) -> dict[str, Any]:
    tid = ctx.require_tenant(body.tenant)
    ctx.require_vault(body.vault)
    return policies.create_policy(
        ctx.rt, tid, body.name, region=body.region, vault=body.vault, key=body.key, key_version=body.key_version
    )


@router.get("/policies/{policy}")
def show_policy(policy: str, ctx: Ctx = allow("policy")) -> dict[str, Any]:
    return policies.show_policy(ctx.rt, policy)


@router.patch("/policies/{policy}")
def update_policy(policy: str, body: PolicyUpdate, ctx: Ctx = allow("policy", write=True)) -> dict[str, Any]:
    return policies.update_policy(ctx.rt, policy, key=body.key, key_version=body.key_version)


@router.delete("/policies/{policy}")
def delete_policy(policy: str, ctx: Ctx = allow("policy", write=True)) -> dict[str, Any]:
    return policies.delete_policy(ctx.rt, policy)
