"""Environments: list (incl. "Environments with policies"), create, the encryption page, managed
flag, features, and re-enable after revocation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from keyshift.api.access import Ctx, allow
from keyshift.api.models.environment import (
    Environment,
    EnvironmentDeleted,
    EnvironmentReEnabled,
    EnvironmentSummary,
)
from keyshift.api.schemas import EnvironmentCreate, FeatureEnable, ManagedUpdate
from keyshift.control import environments, revocation

router = APIRouter(tags=["environments"])


@router.get("/environments", response_model=list[EnvironmentSummary])
def list_environments(
    tenant: str | None = None, with_policies: bool = False, ctx: Ctx = allow("collection")
) -> list[dict[str, Any]]:
    scope = ctx.tenant_filter
    if tenant is not None:
        tid = ctx.require_tenant(tenant)
        return environments.list_environments(ctx.rt, tenant=tid, with_policies=with_policies)
    return environments.list_environments(ctx.rt, tenant=scope, with_policies=with_policies)


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
