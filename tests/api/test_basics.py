"""Authentication, error shape, size limits and the per-request audit record."""

from __future__ import annotations

from fastapi.testclient import TestClient

from keyshift.control import audit_trail, tokens
from keyshift.runtime import Runtime

from .conftest import bearer

UNAUTH = {"error": {"code": "unauthenticated", "message": "authentication failed"}}


def test_authentication_failures_are_opaque_401(client: TestClient, rt: Runtime) -> None:
    revoked = tokens.create_token(rt, "operator")
    tokens.revoke_token(rt, revoked["id"])
    good = tokens.create_token(rt, "operator")["token"]
    variants = [
        {},
        {"Authorization": "Basic abc"},
        bearer("nonsense"),
        bearer(revoked["token"]),
        bearer(good[:-1] + ("A" if good[-1] != "A" else "B")),
        bearer("x" * 5000),
    ]
    for headers in variants:
        r = client.get("/api/v1/whoami", headers=headers)
        assert r.status_code == 401, headers
        assert r.json() == UNAUTH
        assert r.headers["www-authenticate"] == "Bearer"
    ok = client.get("/api/v1/whoami", headers=bearer(good))
    assert ok.status_code == 200 and ok.json()["role"] == "operator"


def test_every_request_is_in_the_audit_trail_with_its_principal(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    tid = tokens.authenticate(rt, operator_token).token_id
    client.get("/api/v1/whoami", headers=bearer(operator_token))
    client.get("/api/v1/whoami")
    client.get("/api/v1/no-such-route", headers=bearer(operator_token))
    rows = [e for e in audit_trail.query(rt) if e["action"] == "api.request"]
    assert [(e["principal"], e["target"]["id"], e["details"]["status"], e["outcome"]) for e in rows] == [
        (f"token:{tid}:operator", "GET /api/v1/whoami", 200, "ok"),
        ("anonymous", "GET /api/v1/whoami", 401, "error"),
        ("anonymous", "GET /api/v1/no-such-route", 404, "error"),
    ]


def test_service_audit_records_name_the_token_principal(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    tid = tokens.authenticate(rt, operator_token).token_id
    r = client.post("/api/v1/tenants", json={"name": "contoso"}, headers=bearer(operator_token))
    assert r.status_code == 201, r.text
    created = [e for e in audit_trail.query(rt) if e["action"] == "tenant.create"]
    assert [e["principal"] for e in created] == [f"token:{tid}:operator"]


def test_operator_requests_on_a_tenants_object_appear_in_that_tenants_trail(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    from keyshift.control import tenants

    t = tenants.create_tenant(rt, "contoso")
    assert client.get(f"/api/v1/tenants/{t['id']}", headers=bearer(operator_token)).status_code == 200
    rows = [e for e in audit_trail.query(rt, tenant_id=t["id"]) if e["action"] == "api.request"]
    assert [r["target"]["id"] for r in rows] == [f"GET /api/v1/tenants/{t['id']}"]
