"""GET /api/v1/environments filters and pages (X-Next-After), scoped like the rest of the API."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from keyshift.control import environments, tenants, tokens
from keyshift.runtime import Runtime

from .conftest import bearer


def _names(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()]


def test_filters_and_pages(client: TestClient, rt: Runtime, operator_token: str) -> None:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    names = []
    for i in range(12):
        tid = a["id"] if i % 3 else b["id"]
        name = f"{'alpha' if i % 3 else 'beta'}-{i:02d}"
        environments.create_environment(rt, tid, name, env_type="production" if i % 2 else "sandbox")
        names.append(name)
    op = bearer(operator_token)
    # Without paging parameters: the whole list, as before.
    assert _names(client.get("/api/v1/environments", headers=op)) == sorted(names)
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 5, **({"after": after} if after else {})}
        r = client.get("/api/v1/environments", params=params, headers=op)
        seen += _names(r)
        after = r.headers.get("X-Next-After")
        if after is None:
            break
    assert seen == sorted(names)
    r = client.get("/api/v1/environments", params={"q": "ALPHA", "type": "production"}, headers=op)
    assert _names(r) == sorted(n for n in names if n.startswith("alpha") and int(n[-2:]) % 2)
    r = client.get("/api/v1/environments", params={"state": "frozen"}, headers=op)
    assert r.status_code == 422 and "frozen" not in r.text
    admin = bearer(tokens.create_token(rt, "tenant_admin", tenant="alpha")["token"])
    r = client.get("/api/v1/environments", params={"q": "-0"}, headers=admin)
    assert _names(r) == sorted(n for n in names if n.startswith("alpha-0"))
    r = client.get("/api/v1/environments", params={"tenant": "beta", "limit": 5}, headers=admin)
    assert r.status_code == 404
