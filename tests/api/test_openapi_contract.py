"""The OpenAPI contract: readable operation ids, the bearer scheme, declared headers, constraints the
server enforces, `Allow` on 405, strict JSON types, the CSRF refusal and messages that never echo."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from keyshift.control import tenants, vaults
from keyshift.runtime import Runtime
from keyshift.web.session import SESSION_COOKIE

from .conftest import bearer


def _ops(client: TestClient) -> dict[tuple[str, str], dict[str, Any]]:
    doc = client.get("/openapi.json").json()
    return {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}


def test_every_operation_has_a_stable_readable_id(client: TestClient) -> None:
    ops = _ops(client)
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) and len(i) <= 40 for i in ids), ids
    assert ops[("GET", "/api/v1/environments")]["operationId"] == "environments_list"
    assert ops[("GET", "/api/v1/environments/{env}")]["operationId"] == "environments_get"
    assert ops[("POST", "/api/v1/jobs/{job}/cancel")]["operationId"] == "jobs_cancel"
    assert ops[("POST", "/api/v1/vaults/{vault}/keys/{key}/rotate")]["operationId"] == "keys_rotate"


def test_bearer_scheme_declared_and_public_probes_open(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    ops = _ops(client)
    assert ops[("GET", "/healthz")]["security"] == [] and ops[("GET", "/readyz")]["security"] == []
    guarded = [k for k, op in ops.items() if k[1] not in ("/healthz", "/readyz")]
    assert all(ops[k]["security"] == [{"bearerAuth": []}] for k in guarded)
    # What the document says is what the server does: no token, 401 with the challenge.
    r = client.get("/api/v1/environments")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200


def test_declared_headers_and_request_constraints(client: TestClient, rt: Runtime) -> None:
    ops = _ops(client)
    added = ops[("POST", "/api/v1/policies/{policy}/environments")]["responses"]["202"]["headers"]
    assert added["Location"]["required"] and added["Retry-After"]["required"]
    assert "Retry-After" in ops[("GET", "/api/v1/environments/{env}")]["responses"]["503"]["headers"]
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    # Regions come from the deployment's configuration.
    region = schemas["PolicyCreate"]["properties"]["region"]
    assert region["enum"] == list(rt.settings.regions)
    assert "pattern" in schemas["TenantCreate"]["properties"]["name"]
    sizes = {s["properties"]["type"]["const"]: s["properties"]["size"] for s in _key_kinds(schemas)}
    assert sizes["RSA"]["enum"] == [2048, 3072, 4096] and sizes["AES"]["const"] == 256
    since = next(p for p in ops[("GET", "/api/v1/audit-trail")]["parameters"] if p["name"] == "since")[
        "schema"
    ]["anyOf"][0]
    assert since["format"] == "date-time"
    confirm = ops[("DELETE", "/api/v1/environments/{env}")]["parameters"]
    assert any(p["name"] == "confirm" and p["required"] for p in confirm)


def _key_kinds(schemas: dict[str, Any]) -> list[dict[str, Any]]:
    return [schemas["RsaKeyCreate"], schemas["AesKeyCreate"]]


def test_405_allow_lists_every_method_of_the_path(client: TestClient, operator_token: str) -> None:
    h = bearer(operator_token)
    r = client.request("OPTIONS", "/api/v1/environments", headers=h)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, HEAD, POST"
    r = client.patch("/api/v1/vaults/v/keys/k/rotate", headers=h)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.request("OPTIONS", "/api/v1/environments/e/records/t/r", headers=h)
    assert r.headers["allow"] == "DELETE, GET, HEAD, PUT"


def test_wrong_json_types_are_refused_not_coerced(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    h = bearer(operator_token)
    before = client.get("/api/v1/tenants", headers=h).json()
    for body in (
        {"name": "acme", "byok": "true"},  # a string is not a boolean
        {"name": 12345},  # a number is not a name
    ):
        r = client.post("/api/v1/tenants", json=body, headers=h)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "invalid_request"
    assert client.get("/api/v1/tenants", headers=h).json() == before  # nothing was created
    tenants.create_tenant(rt, "acme")
    r = client.post("/api/v1/vaults", json={"name": "v1", "soft_delete_days": "30"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("soft_delete_days")
    # JSON has one number type: 30.0 is the integer 30 (as JSON Schema says), 30.5 is not.
    assert (
        client.post("/api/v1/vaults", json={"name": "v2", "soft_delete_days": 30.5}, headers=h).status_code
        == 422
    )
    ok = client.post("/api/v1/vaults", json={"name": "v3", "soft_delete_days": 30.0}, headers=h)
    assert ok.status_code == 201, ok.text
    r = client.post("/api/v1/vaults/v3/keys", json={"name": "k", "type": "RSA", "size": "2048"}, headers=h)
    assert r.status_code == 422
    r = client.post("/api/v1/vaults/v3/keys", json={"name": "k", "type": "RSA", "size": 256}, headers=h)
    assert r.status_code == 422 and "size" in r.json()["error"]["message"]
    r = client.get("/api/v1/audit-trail", params={"since": "yesterday"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("since")
    assert client.get("/api/v1/audit-trail", params={"since": "2026-01-01T00:00:00Z"}, headers=h).is_success
    names = {v["name"] for v in client.get("/api/v1/vaults", headers=h).json()}
    assert "v3" in names and not names & {"v1", "v2"}


def test_validation_messages_name_the_field_without_echoing(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    h = bearer(operator_token)
    secret = "s3cr3t-VALUE-do-not-echo"
    bodies: list[Any] = [
        {"name": "acme", secret: 1},  # unknown field (named by a cut, printable form only)
        {"name": "a" * 300 + secret},
        {"name": ["x", secret]},
        {"name": "acme", "byok": secret},
    ]
    for body in bodies:
        r = client.post("/api/v1/tenants", json=body, headers=h)
        assert r.status_code == 422, body
        message = r.json()["error"]["message"]
        assert secret not in message and "a" * 100 not in message, message
    vaults.create_local_vault(rt, "v", soft_delete_days=30, purge_protection=False)
    r = client.post("/api/v1/vaults/v/keys", json={"name": "k", "type": secret, "size": 1}, headers=h)
    assert r.status_code == 422 and secret not in r.text and r.json()["error"]["message"].startswith("body")
    r = client.post("/api/v1/tenants", json={"name": "acme", "x" * 500: 1}, headers=h)
    assert r.status_code == 422 and len(r.json()["error"]["message"]) < 200


def test_missing_csrf_field_is_the_documented_403(client: TestClient, rt: Runtime) -> None:
    from keyshift.control import tokens

    token = tokens.create_token(rt, "operator")["token"]
    client.cookies.set(SESSION_COOKIE, token)
    r = client.post("/logout", data={}, follow_redirects=False, headers={"accept": "application/json"})
    assert r.status_code == 403, r.text
    assert "reload and retry" in r.text
