"""REST: key and environment coverage, retire, and the gate on the key routes (409 key_in_use,
`?force=true` proceeds and is audited). Another tenant's admin gets 404 and learns nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from keycov_support import KEY, VAULT, audit, key_state, linked_world, run
from sqlalchemy import select, update

from keyshift.api.app import create_app
from keyshift.control import tenants, tokens, vaults
from keyshift.db.models import Tenant, VaultRecord
from keyshift.runtime import Runtime


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_coverage_routes_and_gate(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    w = linked_world(rt, rows=4, events=1, files=1)
    with rt.transaction() as s:  # the customer vault belongs to contoso (as a tenant admin creates it)
        tid = s.scalars(select(Tenant.id).where(Tenant.name == "contoso")).one()
        s.execute(update(VaultRecord).where(VaultRecord.name == VAULT).values(tenant_id=tid))
    tenants.create_tenant(rt, "fabrikam")
    op = tokens.create_token(rt, "operator")["token"]
    admin = tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"]
    other = tokens.create_token(rt, "tenant_admin", tenant="fabrikam")["token"]
    reader = tokens.create_token(rt, "reader", tenant="contoso")["token"]
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        base = f"/api/v1/vaults/{VAULT}/keys/{KEY}"
        r = c.get(f"{base}/coverage", headers=_h(admin))
        assert r.status_code == 200 and r.json()["all_versions"]["totals"]["rows"] == 9
        assert (
            c.get(f"{base}/coverage?version=1", headers=_h(reader)).json()["versions"][0]["covered"] is True
        )
        r = c.get("/api/v1/environments/prod/coverage", headers=_h(admin))
        assert r.status_code == 200 and r.json()["keys"][0]["key"] == KEY
        for url in (f"{base}/coverage", "/api/v1/environments/prod/coverage"):
            r = c.get(url, headers=_h(other))
            assert r.status_code == 404 and w["prod"] not in r.text and "rows" not in r.text
        assert c.post(f"{base}/retire", json={"version": "1"}, headers=_h(reader)).status_code == 403

        before = key_state(rt)
        r = c.post(f"{base}/disable", headers=_h(admin))
        assert r.status_code == 409 and r.json()["error"]["code"] == "key_in_use"
        r = c.delete(f"{base}/grants/{w['identity']}", headers=_h(admin))
        assert r.status_code == 409 and r.json()["error"]["code"] == "key_in_use"
        assert key_state(rt) == before

        vaults.rotate_key(rt, VAULT, KEY)
        r = c.post(f"{base}/retire", json={"version": "1"}, headers=_h(admin))
        assert r.status_code == 200 and len(r.json()["jobs_started"]) == 1
        assert run(rt, r.json()["jobs_started"][0]["job"]["id"]) == "succeeded"
        r = c.post(f"{base}/disable", json={"version": "1"}, headers=_h(admin))
        assert r.status_code == 200 and r.json()["versions"][0]["enabled"] is False
        r = c.post(f"{base}/disable?force=true", json={"version": "2"}, headers=_h(op))
        assert r.status_code == 200 and r.json()["versions"][1]["enabled"] is False
    assert audit(rt, "key.disable.forced")[0][0] == "ok"


def test_admin_center_coverage_page(sqlite_rt: Runtime) -> None:
    import re

    rt = sqlite_rt
    w = linked_world(rt, rows=4, events=1, files=1)
    tenants.create_tenant(rt, "fabrikam")
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:

        def login(token: str) -> None:
            c.cookies.clear()
            form = c.get("/login").text
            m = re.search(r'name="login_csrf" value="([^"]+)"', form)
            assert m
            r = c.post("/login", data={"token": token, "login_csrf": m.group(1)}, follow_redirects=False)
            assert r.status_code == 303

        login(tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"])
        assert f'href="/environments/{w["prod"]}/coverage"' in c.get(f"/environments/{w['prod']}").text
        page = c.get(f"/environments/{w['prod']}/coverage")
        assert page.status_code == 200
        assert f"{VAULT}/{KEY}</code> version 1" in page.text and "<td>Rows</td><td>9</td>" in page.text
        login(tokens.create_token(rt, "tenant_admin", tenant="fabrikam")["token"])
        r = c.get(f"/environments/{w['prod']}/coverage")
        assert r.status_code == 404 and VAULT not in r.text
