"""API tokens: create (shown once), list, revoke, and authenticate a presented token.

A token string is `<id>.<secret>`: the id (`tok_` + 20 hex) is the lookup prefix, the secret is
256 bits from `secrets`. Only SHA-256(secret) is stored; comparison is constant time. Every failure
to authenticate — malformed, unknown, revoked, wrong secret — is the same opaque
AuthenticationError, and the work done is the same whether the id exists or not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from keyshift.control import audit_trail, refs
from keyshift.db.models import ApiToken, Environment, Tenant
from keyshift.db.types import new_id
from keyshift.errors import AuthenticationError, ConflictError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

ROLES = ("operator", "tenant_admin", "service", "reader")
_ID_RE = re.compile(r"^tok_[0-9a-f]{20}\Z")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
MAX_TOKEN_CHARS = 200
_DUMMY_HASH = hashlib.sha256(b"keyshift-no-such-token").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, role, tenant scope and (for `service`) granted environments."""

    token_id: str
    role: str
    tenant_id: str | None = None
    env_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        return f"token:{self.token_id}:{self.role}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _find_tenant(session: Session, ref: str) -> Tenant:
    row = session.scalars(select(Tenant).where(or_(Tenant.id == ref, Tenant.name == ref))).first()
    if row is None:
        raise NotFoundError(f"tenant {ref!r} not found", code="tenant_not_found")
    return row


def _find_env(session: Session, ref: str) -> Environment:
    row = session.scalars(
        select(Environment).where(
            or_(Environment.id == ref, Environment.name == ref), Environment.state != "deleted"
        )
    ).first()
    if row is None:
        raise NotFoundError(f"environment {ref!r} not found", code="environment_not_found")
    return row


def _validate(role: str, tenant: str | None, envs: list[str]) -> None:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", code="invalid_role")
    if role == "operator" and (tenant or envs):
        raise UsageError("an operator token is not scoped to a tenant or environment")
    if role == "tenant_admin" and not tenant:
        raise UsageError("a tenant_admin token needs --tenant")
    if role == "tenant_admin" and envs:
        raise UsageError("a tenant_admin token covers its whole tenant; --env is for service tokens")
    if role == "service" and not envs:
        raise UsageError("a service token needs at least one --env")
    if role == "reader" and envs:
        raise UsageError("--env is only for service tokens")


def create_token(
    rt: Runtime,
    role: str,
    *,
    tenant: str | None = None,
    envs: list[str] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Create a token. The returned view holds the token string; it is never retrievable again."""
    envs = list(envs or [])
    try:
        _validate(role, tenant, envs)
        if label is not None and len(label) > 200:
            raise UsageError("label is longer than 200 characters")
        with rt.transaction() as session:
            tenant_id = _find_tenant(session, tenant).id if tenant else None
            env_rows = [_find_env(session, e) for e in envs]
            if tenant_id and any(e.tenant_id != tenant_id for e in env_rows):
                raise ConflictError("every --env must belong to --tenant", code="tenant_mismatch")
            secret = secrets.token_urlsafe(32)
            token = ApiToken(
                id=new_id("tok"),
                secret_sha256=_hash(secret),
                role=role,
                tenant_id=tenant_id,
                env_ids=sorted({e.id for e in env_rows}),
                label=label,
                created_at=rt.clock.now(),
                created_by=rt.principal,
            )
            session.add(token)
            session.flush()
            audit_trail.record(
                rt,
                session,
                "token.create",
                target_type="token",
                target_id=token.id,
                tenant_id=tenant_id,
                details={"role": role, "env_ids": token.env_ids},
            )
            view = to_view(token, session)
    except (UsageError, NotFoundError, ConflictError) as err:
        audit_trail.record_failure(
            rt, "token.create", err, target_type="token", details={"role": str(role)[:20]}
        )
        raise
    view["token"] = f"{view['id']}.{secret}"
    return view


def list_tokens(rt: Runtime, *, include_revoked: bool = True) -> list[dict[str, Any]]:
    with rt.transaction() as session:
        stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        if not include_revoked:
            stmt = stmt.where(ApiToken.revoked_at.is_(None))
        return [to_view(t, session) for t in session.scalars(stmt)]


def revoke_token(rt: Runtime, token_id: str) -> dict[str, Any]:
    try:
        with rt.transaction() as session:
            token = session.get(ApiToken, token_id)
            if token is None:
                raise NotFoundError(f"token {token_id!r} not found", code="token_not_found")
            if token.revoked_at is None:
                token.revoked_at = rt.clock.now()
                token.revoked_by = rt.principal
            audit_trail.record(
                rt,
                session,
                "token.revoke",
                target_type="token",
                target_id=token.id,
                tenant_id=token.tenant_id,
            )
            return to_view(token, session)
    except NotFoundError as err:
        audit_trail.record_failure(rt, "token.revoke", err, target_type="token", target_id=token_id[:60])
        raise


def authenticate(rt: Runtime, presented: str | None) -> Principal:
    """The principal for a presented token string, or the one opaque AuthenticationError."""
    token_id, _, secret = (presented or "").partition(".")
    well_formed = (
        len(presented or "") <= MAX_TOKEN_CHARS
        and bool(_ID_RE.match(token_id))
        and bool(_SECRET_RE.match(secret))
    )
    row = None
    if well_formed:
        with rt.transaction() as session:
            row = session.get(ApiToken, token_id)
            if row is not None:
                session.expunge(row)
    expected = row.secret_sha256 if row is not None else _DUMMY_HASH
    given = _hash(secret) if well_formed else _hash("x")
    matches = hmac.compare_digest(expected, given)
    if not well_formed or row is None or not matches or row.revoked_at is not None:
        raise AuthenticationError()
    return Principal(
        token_id=row.id, role=row.role, tenant_id=row.tenant_id, env_ids=frozenset(row.env_ids or [])
    )


def to_view(t: ApiToken, session: Session) -> dict[str, Any]:
    """A token (never its secret); `tenant` and `environments` are {"id", "name"} references."""
    env_ids = list(t.env_ids or [])
    env_names = refs.names(session, Environment, env_ids)
    return {
        "id": t.id,
        "role": t.role,
        "tenant": refs.tenant_ref(session, t.tenant_id),
        "environments": [{"id": e, "name": env_names.get(e)} for e in env_ids],
        "label": t.label,
        "created_at": iso_z(t.created_at),
        "created_by": t.created_by,
        "revoked_at": iso_z(t.revoked_at) if t.revoked_at else None,
        "state": "revoked" if t.revoked_at else "active",
    }
