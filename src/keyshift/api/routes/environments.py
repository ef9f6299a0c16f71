"""Environments: list (incl. "Environments with policies"), create, the encryption page, managed
flag, features, and re-enable after revocation."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response, status

from keyshift.api.access import Ctx, allow
from keyshift.api.models.environment import (
    Environment,
    EnvironmentDeleted,
    EnvironmentReEnabled,
    EnvironmentSummary,
)
from keyshift.api.schemas import EnvironmentCreate, FeatureEnable, ManagedUpdate
from keyshift.control import env_search, environments, revocation

router = APIRouter(tags=["environments"])


@router.get("/environments", response_model=list[EnvironmentSummary])
def list_environments(
    response: Response,
    tenant: str | None = None,
    with_policies: bool = False,
    q: str | None = Query(default=None, min_length=1, max_length=200, description="name contains"),
    region: str | None = Query(default=None, max_length=100),
    type: Literal["production", "sandbox", "trial", "teams", "developer"] | None = None,
    state: Literal["enabled", "disabled", "locked"] | None = None,
    mode: Literal["platform", "byok", "cmk"] | None = None,
    after: str | None = Query(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:@+=~-]{1,512}$",
        description="the previous page's X-Next-After",
    ),
    limit: int | None = Query(default=None, ge=1, le=env_search.MAX_PAGE),
    ctx: Ctx = allow("collection"),
) -> list[dict[str, Any]]:
    """All environments by name; with `limit` one page, and `X-Next-After` when there is more."""
    tid = ctx.require_tenant(tenant) if tenant is not None else None
    if limit is None and after is None and not any((q, region, type, state, mode)):
        return environments.list_environments(
            ctx.rt, tenant=tid or ctx.tenant_filter, with_policies=with_policies
        )
    flt = env_search.EnvFilter(
        tenant_id=tid, q=q, region=region, type=type, state=state, mode=mode, with_policies=with_policies
    )
    page = env_search.search(
        ctx.rt, flt, scope_tenant=ctx.tenant_filter, after=after, limit=limit or env_search.MAX_PAGE
    )
    if page["next_after"] is not None:
        response.headers["X-Next-After"] = page["next_after"]
    return list(page["environments"])


@router.post("/environments", response_model=Environment, status_code=status.HTTP_201_CREATED)
def create_environment(body: EnvironmentCreate, ctx: Ctx = allow("collection", write=True)) -> dict[str, Any]:
    tid = ctx.require_tenant(body.tenant)
    return environments.create_environment(ctx.rt, tid, body.name, region=body.region, env_type=body.type)


@router.get("/environments/{env}", response_model=Environment)
def show_environment(env: str, ctx: Ctx = allow("env")) -> dict[str, Any]:
    """The environment encryption page: managed by, key, policy, status, state, stores, features."""
    return environments.show_environment(ctx.rt, env)


@router.put("/environments/{env}/managed", response_model=Environment)
def set_managed(env: str, body: ManagedUpdate, ctx: Ctx = allow("env", write=True)) -> dict[str, Any]:
    return environments.set_managed(ctx.rt, env, body.managed)


@router.post("/environments/{env}/features", response_model=Environment)
def enable_feature(env: str, body: FeatureEnable, ctx: Ctx = allow("env", write=True)) -> dict[str, Any]:
    return environments.enable_feature(ctx.rt, env, body.feature)


@router.post("/environments/{env}/re-enable", response_model=EnvironmentReEnabled)
def re_enable(env: str, ctx: Ctx = allow("env", write=True)) -> dict[str, Any]:
    """After key access is restored: prove the key with a real round trip, then enable the environment."""
    return revocation.reenable_environment(ctx.rt, env)


@router.delete("/environments/{env}", response_model=EnvironmentDeleted)
def delete_environment(
    env: str, confirm: str | None = None, ctx: Ctx = allow("operator", write=True)
) -> dict[str, Any]:
    """Operator only: delete an environment now (`?confirm=NAME`): crypto-shredded, irreversible."""
    from keyshift.control.deletion import delete_now

    return delete_now(ctx.rt, env, confirm=confirm)
