"""`/api/v1/tokens` (operator only, like `keyshift token`): create shows the secret once, list and
revoke; typed responses with {id, name} references and Z timestamps; refusals change nothing."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from keyshift.control import environments, tenants, tokens
from keyshift.runtime import Runtime

from .conftest import bearer

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _rows(rt: Runtime) -> list[tuple[Any, ...]]:
    with rt.engine.connect() as c:
        return [tuple(r) for r in c.execute(text("select * from api_tokens order by id"))]


def test_operator_creates_lists_and_revokes_tokens(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    t = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, t["id"], "contoso-prod")
    r = client.post(
        "/api/v1/tokens",
        json={"role": "service", "tenant": "contoso", "environments": ["contoso-prod"], "label": "etl"},
        headers=bearer(operator_token),
    )
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    created = r.json()
    assert created["tenant"] == {"id": t["id"], "name": "contoso"}
    assert created["environments"] == [{"id": env["id"], "name": "contoso-prod"}]
    assert Z_TIME.match(created["created_at"]) and created["state"] == "active"
    secret = created["token"].partition(".")[2]
    assert tokens.authenticate(rt, created["token"]).env_ids == frozenset({env["id"]})

    listed = client.get("/api/v1/tokens?role=service&tenant=contoso", headers=bearer(operator_token)).json()
    assert [v["id"] for v in listed] == [created["id"]]
    assert all("token" not in v for v in listed) and secret not in str(listed)
    everyone = client.get("/api/v1/tokens", headers=bearer(operator_token)).json()
    assert {v["role"] for v in everyone} == {"operator", "service"}

    r = client.post(f"/api/v1/tokens/{created['id']}/revoke", headers=bearer(operator_token))
    assert r.status_code == 200 and r.json()["state"] == "revoked" and Z_TIME.match(r.json()["revoked_at"])
    assert client.get("/api/v1/whoami", headers=bearer(created["token"])).status_code == 401
    revoked = client.get("/api/v1/tokens?state=revoked", headers=bearer(operator_token)).json()
    assert [v["id"] for v in revoked] == [created["id"]]


def test_other_roles_may_not_manage_tokens(client: TestClient, rt: Runtime, operator_token: str) -> None:
    tenants.create_tenant(rt, "contoso")
    admin = tokens.create_token(rt, "tenant_admin", tenant="contoso")
    reader = tokens.create_token(rt, "reader")
    before = _rows(rt)
    for who in (admin, reader):
        h = bearer(who["token"])
        r = client.get("/api/v1/tokens", headers=h)
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert admin["id"] not in r.text and reader["id"] not in r.text
        assert client.post("/api/v1/tokens", json={"role": "operator"}, headers=h).status_code == 403
        assert client.post(f"/api/v1/tokens/{admin['id']}/revoke", headers=h).status_code == 403
    assert _rows(rt) == before


def test_bad_token_requests_are_refused_with_stable_codes_and_change_nothing(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    tenants.create_tenant(rt, "contoso")
    h = bearer(operator_token)
    before = _rows(rt)
    cases = [
        ({"role": "tenant_admin"}, 422, "invalid_request"),  # a tenant admin token needs a tenant
        ({"role": "tenant_admin", "tenant": "nope"}, 404, "tenant_not_found"),
        ({"role": "service", "environments": []}, 422, "invalid_request"),  # at least one
        ({"role": "reader", "environments": ["x"]}, 422, "invalid_request"),  # only service tokens
        ({"role": "operator", "tenant": "contoso"}, 422, "invalid_request"),  # never scoped
        ({"role": "root"}, 422, "invalid_request"),
        ({"role": "reader", "extra": 1}, 422, "invalid_request"),
        ({"role": "reader", "label": "a\x00b"}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = client.post("/api/v1/tokens", json=body, headers=h)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["code"] == code, (body, r.text)
    r = client.post("/api/v1/tokens/tok_00000000000000000000/revoke", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "token_not_found"
    r = client.get("/api/v1/tokens?role=root", headers=h)
    assert r.status_code == 422
    assert _rows(rt) == before


def test_token_operations_are_typed_in_the_openapi_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    assert {"tokens_list", "tokens_create", "tokens_revoke"} <= set(ops)
    created = ops["tokens_create"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/TokenCreatedOut"}
    schema = doc["components"]["schemas"]["TokenCreatedOut"]
    assert "token" in schema["required"] and "tenant" in schema["properties"]
    assert "token" not in doc["components"]["schemas"]["TokenOut"]["properties"]
