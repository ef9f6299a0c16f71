"""REST routes of the ways out: `DELETE /environments/{env}?confirm=NAME` and
`POST /tenants/{t}/byok-flag/add` (operator only), `PATCH /vaults/{v}/keys/{k}` (key expiry)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from keyshift.control import environments, tenants, tokens, vaults
from keyshift.runtime import Runtime

from .conftest import bearer


def test_env_delete_byok_flag_add_and_key_update_routes(client: TestClient, rt: Runtime) -> None:
    t = tenants.create_tenant(rt, "contoso")
    environments.create_environment(rt, t["id"], "contoso-dev")
    admin = bearer(tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"])
    op = bearer(tokens.create_token(rt, "operator")["token"])

    def call(method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
        return client.request(method, f"/api/v1{path}", headers=headers, **kw)

    # env delete: operator only, confirmation required, then gone
    assert call("DELETE", "/environments/contoso-dev?confirm=contoso-dev", admin).status_code == 403
    r = call("DELETE", "/environments/contoso-dev", op)
    assert r.status_code == 400 and r.json()["error"]["code"] == "confirmation_required"
    assert call("GET", "/environments/contoso-dev", op).json()["state"] == "enabled"
    r = call("DELETE", "/environments/contoso-dev?confirm=contoso-dev", op)
    assert r.status_code == 200 and r.json()["state"] == "deleted"
    assert call("GET", "/environments/contoso-dev", op).json()["state"] == "deleted"

    # byok-flag add: operator only; a tenant that never was BYOK is refused
    assert call("POST", "/tenants/contoso/byok-flag/add", admin, json={"ticket": "OPS-1"}).status_code == 403
    r = call("POST", "/tenants/contoso/byok-flag/add", op, json={"ticket": "OPS-1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_byok_tenant"
    tenants.create_tenant(rt, "fab", byok=True)
    tenants.byok_flag_remove(rt, "fab", ticket="OPS-2")  # no BYOK environment: finalizes
    r = call("POST", "/tenants/fab/byok-flag/add", op, json={"ticket": "OPS-3"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "tenant_finalized"

    # key update: the tenant admin extends and clears a key's expiry
    assert call("POST", "/vaults", admin, json={"name": "kv", "purge_protection": True}).status_code == 201
    vaults.create_key(rt, "kv", "k", "RSA", 2048, expires=rt.clock.now() + timedelta(days=1))
    later = rt.clock.now() + timedelta(days=90)
    r = call("PATCH", "/vaults/kv/keys/k", admin, json={"expires": later.isoformat()})
    assert r.status_code == 200
    assert datetime.fromisoformat(r.json()["versions"][0]["expires"].replace("Z", "+00:00")) == later
    r = call("PATCH", "/vaults/kv/keys/k", admin, json={"expires": "never", "version": "1"})
    assert r.status_code == 200 and r.json()["versions"][0]["expires"] is None
    r = call("PATCH", "/vaults/kv/keys/k", admin, json={"expires": "soon"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("expires")  # schema: date-time
    r = call("PATCH", "/vaults/kv/keys/nope", admin, json={"expires": later.isoformat()})
    assert r.status_code == 404
