"""A request id for every API request: the caller's `X-Request-ID` when well formed, else a fresh
one; echoed in the response and written into every admin audit entry the request records."""

from __future__ import annotations

from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import audit_trail, tokens
from keyshift.runtime import Runtime


def _setup(rt: Runtime) -> tuple[TestClient, dict[str, str]]:
    token = str(tokens.create_token(rt, "operator")["token"])
    return TestClient(create_app(rt), raise_server_exceptions=False), {"Authorization": f"Bearer {token}"}


def test_a_well_formed_request_id_reaches_the_response_and_the_audit_trail(rt: Runtime) -> None:
    client, auth = _setup(rt)
    with client:
        resp = client.post(
            "/api/v1/tenants", json={"name": "contoso"}, headers={**auth, "X-Request-ID": "lb-42.a_b:c"}
        )
    assert resp.status_code == 201, resp.text
    assert resp.headers["x-request-id"] == "lb-42.a_b:c"
    entries = [e for e in audit_trail.query(rt) if e["details"].get("request_id") == "lb-42.a_b:c"]
    actions = sorted(e["action"] for e in entries)
    assert actions == ["api.request", "tenant.create"], actions  # the change and the request record


def test_a_missing_or_malformed_request_id_is_replaced(rt: Runtime) -> None:
    client, auth = _setup(rt)
    with client:
        fresh = client.get("/api/v1/tenants", headers=auth)
        bad = client.get(
            "/api/v1/tenants", headers={**auth, "X-Request-ID": "evil\tid with spaces" + "x" * 80}
        )
        long = client.get("/api/v1/tenants", headers={**auth, "X-Request-ID": "a" * 65})
    ids = [r.headers["x-request-id"] for r in (fresh, bad, long)]
    assert all(len(i) == 24 and all(ch in "0123456789abcdef" for ch in i) for i in ids), ids
    assert len(set(ids)) == 3
    recorded = [e["details"].get("request_id") for e in audit_trail.query(rt) if e["action"] == "api.request"]
    assert recorded[-3:] == ids


def test_audit_entries_outside_a_request_carry_no_request_id(rt: Runtime) -> None:
    from keyshift.control import tenants

    tenants.create_tenant(rt, "contoso")
    entry = next(e for e in audit_trail.query(rt) if e["action"] == "tenant.create")
    assert "request_id" not in entry["details"]


def test_error_responses_carry_the_request_id_too(rt: Runtime) -> None:
    client, _ = _setup(rt)
    with client:
        resp = client.get("/api/v1/tenants", headers={"X-Request-ID": "probe-1"})  # no token
    assert resp.status_code == 401
    assert resp.headers["x-request-id"] == "probe-1"
