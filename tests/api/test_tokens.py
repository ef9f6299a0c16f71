"""Token service: shown once, stored hashed, opaque authentication failures, audited."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select, text

from keyshift.control import tokens
from keyshift.db.models import AdminAuditEvent, ApiToken, Tenant
from keyshift.errors import AuthenticationError, NotFoundError, UsageError
from keyshift.runtime import Runtime


def _tenant(rt: Runtime, name: str = "contoso") -> str:
    with rt.transaction() as s:
        t = Tenant(id=f"ten_{name}", name=name, created_at=rt.clock.now())
        s.add(t)
    return t.id


def _token_rows(rt: Runtime) -> list[tuple]:
    with rt.engine.connect() as c:
        return [tuple(r) for r in c.execute(text("select * from api_tokens order by id"))]


def test_token_is_shown_once_and_stored_only_as_hash(rt: Runtime) -> None:
    view = tokens.create_token(rt, "operator")
    token_id, _, secret = view["token"].partition(".")
    assert token_id == view["id"] and len(secret) == 43
    with rt.transaction() as s:
        row = s.get(ApiToken, token_id)
        assert row is not None
        assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    raw = b"".join(repr(r).encode() for r in _token_rows(rt))
    assert secret.encode() not in raw
    assert all("token" not in v for v in tokens.list_tokens(rt))
    p = tokens.authenticate(rt, view["token"])
    assert p.role == "operator" and p.label == f"token:{token_id}:operator"


def test_authentication_failures_are_identical(rt: Runtime) -> None:
    good = tokens.create_token(rt, "reader")["token"]
    revoked = tokens.create_token(rt, "reader")
    tokens.revoke_token(rt, revoked["id"])
    tid, _, secret = good.partition(".")
    bad = [
        None,
        "",
        "garbage",
        tid,
        f"{tid}.{'A' * 43}",
        f"tok_{'0' * 20}.{secret}",
        revoked["token"],
        good + "x",
        "é" * 50,
        "x" * 10_000,
    ]
    messages = set()
    for presented in bad:
        with pytest.raises(AuthenticationError) as ei:
            tokens.authenticate(rt, presented)
        messages.add((ei.value.code, ei.value.message))
    assert messages == {("unauthenticated", "authentication failed")}


def test_scopes_are_validated_and_bad_input_changes_nothing(rt: Runtime) -> None:
    _tenant(rt)
    before = _token_rows(rt)
    for role, kw in [
        ("root", {}),
        ("operator", {"tenant": "contoso"}),
        ("tenant_admin", {}),
        ("service", {}),
        ("reader", {"envs": ["x"]}),
    ]:
        with pytest.raises(UsageError):
            tokens.create_token(rt, role, **kw)
    with pytest.raises(NotFoundError):
        tokens.create_token(rt, "tenant_admin", tenant="nobody")
    with pytest.raises(NotFoundError):
        tokens.revoke_token(rt, "tok_nope")
    assert _token_rows(rt) == before
    with rt.transaction() as s:
        failures = s.scalars(
            select(AdminAuditEvent).where(
                AdminAuditEvent.outcome == "error", AdminAuditEvent.action.like("token.%")
            )
        ).all()
    assert len(failures) == 7


def test_tenant_admin_token_carries_its_tenant_and_is_audited(rt: Runtime) -> None:
    tid = _tenant(rt)
    view = tokens.create_token(rt, "tenant_admin", tenant="contoso", label="ops laptop")
    assert tokens.authenticate(rt, view["token"]).tenant_id == tid
    tokens.revoke_token(rt, view["id"])
    with pytest.raises(AuthenticationError):
        tokens.authenticate(rt, view["token"])
    with rt.transaction() as s:
        events = s.scalars(select(AdminAuditEvent).order_by(AdminAuditEvent.id))
        actions = [e.action for e in events if e.action.startswith("token.")]
    assert actions == ["token.create", "token.revoke"]
