"""Bad input never corrupts anything: malformed JSON, wrong types, unknown fields, huge inputs and
oversized bodies get 4xx with the one error body shape, and the database is unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from keyshift.api.app import create_app
from keyshift.control import environments, tenants, tokens
from keyshift.runtime import Runtime

from .conftest import bearer


@pytest.fixture
def small_app(rt: Runtime) -> Any:
    return create_app(rt, json_limit=64 * 1024, file_limit=256 * 1024)


@pytest.fixture
def small_client(small_app: Any) -> Any:
    with TestClient(small_app, raise_server_exceptions=False) as c:
        yield c


def _state(rt: Runtime) -> dict[str, list[Any]]:
    md = MetaData()
    md.reflect(rt.engine)
    with rt.engine.connect() as conn:
        return {
            n: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
            for n, t in md.tables.items()
            if n != "admin_audit"
        }


def _is_error(resp: Any, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def test_bad_bodies_are_refused_clearly_and_change_nothing(small_client: TestClient, rt: Runtime) -> None:
    tenant = tenants.create_tenant(rt, "contoso")
    environments.create_environment(rt, tenant["id"], "contoso-prod")
    h = bearer(tokens.create_token(rt, "operator")["token"])
    before = _state(rt)
    post = small_client.post
    env_url = "/api/v1/environments"
    _is_error(
        post(env_url, content=b'{"tenant": ', headers={**h, "content-type": "application/json"}),
        400,
        "malformed_json",
    )
    _is_error(post(env_url, content=b"\xff\xfe", headers={**h, "content-type": "application/json"}), 400)
    _is_error(post(env_url, json={"tenant": "contoso", "name": 7}, headers=h), 422, "invalid_request")
    _is_error(post(env_url, json={"tenant": "contoso", "name": "x", "admin": True}, headers=h), 422)
    _is_error(post(env_url, json={"tenant": "contoso", "name": "x", "type": "galaxy"}, headers=h), 422)
    _is_error(post(env_url, json=["not", "an", "object"], headers=h), 422)
    _is_error(post(env_url, json={"tenant": "contoso", "name": "n" * 5000}, headers=h), 422)
    _is_error(post(env_url, json={"tenant": "contoso", "name": "bad name!"}, headers=h), 400, "invalid_name")
    _is_error(post(env_url, json={"tenant": "nobody", "name": "x"}, headers=h), 404, "tenant_not_found")
    _is_error(post(env_url, json={"tenant": "contoso", "name": "contoso-prod"}, headers=h), 409)
    huge = {"tenant": "contoso", "name": "x", "region": "r" * 200_000}
    _is_error(post(env_url, json=huge, headers=h), 413, "payload_too_large")

    def chunked() -> Any:  # no Content-Length: the limit is enforced while streaming
        yield b'{"tenant": "contoso", "name": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    _is_error(post(env_url, content=chunked(), headers={**h, "content-type": "application/json"}), 413)
    _is_error(small_client.get("/api/v1/audit-trail?since=yesterday", headers=h), 422)  # format: date-time
    # NUL never reaches the database (PostgreSQL would refuse it with an internal error).
    _is_error(small_client.get("/api/v1/environments/contoso%00prod", headers=h), 400, "invalid_argument")
    _is_error(small_client.get("/api/v1/environments?tenant=con%00toso", headers=h), 400, "invalid_argument")
    _is_error(post(env_url, json={"tenant": "con\u0000toso", "name": "x"}, headers=h), 422)
    lone_surrogate = b'{"tenant": "\\ud800", "name": "x"}'
    _is_error(post(env_url, content=lone_surrogate, headers={**h, "content-type": "application/json"}), 422)
    _is_error(small_client.get("/api/v1/vaults/platform/keys/k%00", headers=h), 400, "invalid_argument")
    _is_error(small_client.get("/api/v1/jobs?limit=0", headers=h), 422)
    _is_error(small_client.get("/api/v1/no/such/route", headers=h), 404, "not_found")
    _is_error(small_client.delete("/api/v1/tenants", headers=h), 405)
    assert _state(rt) == before


def test_file_upload_over_the_limit_is_refused_and_leaves_no_file(
    small_client: TestClient, rt: Runtime
) -> None:
    tenant = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, tenant["id"], "contoso-prod")
    h = bearer(tokens.create_token(rt, "service", envs=[env["id"]])["token"])
    base = "/api/v1/environments/contoso-prod/files"

    def stream() -> Any:
        for _ in range(300):
            yield b"z" * 1024

    _is_error(small_client.put(f"{base}/big.bin", content=stream(), headers=h), 413, "payload_too_large")
    assert small_client.get(base, headers=h).json() == []
    ok = small_client.put(f"{base}/small.bin", content=b"a" * 1000, headers=h)
    assert ok.status_code == 200 and small_client.get(f"{base}/small.bin", headers=h).content == b"a" * 1000


def test_openapi_document_is_served_and_lists_the_resources(sqlite_rt: Runtime) -> None:
    with TestClient(create_app(sqlite_rt)) as client:
        doc = client.get("/openapi.json").json()
    paths = set(doc["paths"])
    for p in [
        "/api/v1/tenants",
        "/api/v1/environments/{env}",
        "/api/v1/vaults/{vault}/keys",
        "/api/v1/policies/{policy}/environments",
        "/api/v1/jobs/{job}",
        "/api/v1/audit-trail",
        "/api/v1/environments/{env}/records/{table}/{record_id}",
        "/api/v1/environments/{env}/files/{path}",
    ]:
        assert p in paths
    from keyshift.api.routes import MISSING

    assert MISSING == []  # every service layer has landed: no router left out
    add = doc["paths"]["/api/v1/policies/{policy}/environments"]["post"]["responses"]
    assert "202" in add and "409" in add
