"""Token administration views for the API and the admin center: tokens filtered by role, tenant
and state, with `{"id", "name"}` references to their tenant and environments (never a secret)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from keyshift.control import tokens
from keyshift.control.common import get_tenant
from keyshift.db.models import Environment, Tenant
from keyshift.errors import UsageError
from keyshift.runtime import Runtime

STATES = ("active", "revoked")


def with_refs(rt: Runtime, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `tenant` and `environments` references (id and name) to token views."""
    tenant_ids = {v["tenant_id"] for v in views if v.get("tenant_id")}
    env_ids = {e for v in views for e in v.get("env_ids") or []}
    with rt.transaction() as s:
        tnames = dict(s.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(tenant_ids))).all())
        enames = dict(
            s.execute(select(Environment.id, Environment.name).where(Environment.id.in_(env_ids))).all()
        )
    out = []
    for v in views:
        tid = v.get("tenant_id")
        out.append(
            {
                **v,
                "tenant": {"id": tid, "name": tnames.get(tid)} if tid else None,
                "environments": [{"id": e, "name": enames.get(e)} for e in v.get("env_ids") or []],
            }
        )
    return out


def list_token_views(
    rt: Runtime, *, role: str | None = None, tenant: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """Tokens, newest first, optionally only one role, one tenant (name or id) or one state."""
    if role is not None and role not in tokens.ROLES:
        expected = ", ".join(tokens.ROLES)
        raise UsageError(f"unknown role {role!r}; expected one of {expected}", code="invalid_role")
    if state is not None and state not in STATES:
        raise UsageError(
            f"unknown token state {state!r}; expected active or revoked", code="invalid_argument"
        )
    tenant_id = None
    if tenant is not None:
        with rt.transaction() as s:
            tenant_id = get_tenant(s, tenant).id
    rows = [
        v
        for v in tokens.list_tokens(rt)
        if (role is None or v["role"] == role)
        and (tenant_id is None or v["tenant_id"] == tenant_id)
        and (state is None or v["state"] == state)
    ]
    rows.reverse()
    return with_refs(rt, rows)


def create_token_view(
    rt: Runtime, role: str, *, tenant: str | None, envs: list[str], label: str | None
) -> dict[str, Any]:
    """tokens.create_token (audited) with references; the view holds the token string, once."""
    view = tokens.create_token(rt, role, tenant=tenant, envs=envs, label=label)
    return with_refs(rt, [view])[0]


def revoke_token_view(rt: Runtime, token_id: str) -> dict[str, Any]:
    return with_refs(rt, [tokens.revoke_token(rt, token_id)])[0]
