"""Token administration views for the API and the admin center: tokens filtered by role, tenant
and state (never a secret)."""

from __future__ import annotations

from typing import Any

from keyshift.control import tokens
from keyshift.control.common import get_tenant
from keyshift.errors import UsageError
from keyshift.runtime import Runtime

STATES = ("active", "revoked")


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
        and (tenant_id is None or (v["tenant"] or {}).get("id") == tenant_id)
        and (state is None or v["state"] == state)
    ]
    rows.reverse()
    return rows


def create_token_view(
    rt: Runtime, role: str, *, tenant: str | None, envs: list[str], label: str | None
) -> dict[str, Any]:
    """tokens.create_token (audited); the view holds the token string, once."""
    return tokens.create_token(rt, role, tenant=tenant, envs=envs, label=label)


def revoke_token_view(rt: Runtime, token_id: str) -> dict[str, Any]:
    return tokens.revoke_token(rt, token_id)
