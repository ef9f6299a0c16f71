"""Tenants and environments in the admin center (TestClient, SQLite and PostgreSQL): create a tenant
and an environment, the tenant's environments on its page, the environment list's filters and
pages, features on/off — each for the roles that may and may not, with CSRF, bad input and no
cross-tenant leak."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from keyshift.control import environments, tenants
from keyshift.db.models import AdminAuditEvent, Environment, Tenant
from keyshift.runtime import Runtime

from .webclient import alert, client_for, sign_in, token


@pytest.fixture
def web(rt: Runtime) -> Iterator[TestClient]:
    yield from client_for(rt)


def _count(rt: Runtime, model: Any) -> int:
    with rt.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _audited(rt: Runtime, action: str) -> list[str]:
    with rt.transaction() as s:
        stmt = select(AdminAuditEvent.principal).where(AdminAuditEvent.action == action)
        return list(s.scalars(stmt.where(AdminAuditEvent.outcome == "ok")))


def test_operator_creates_a_tenant_others_may_not(web: TestClient, rt: Runtime) -> None:
    tenants.create_tenant(rt, "alpha")
    csrf = sign_in(web, token(rt, "operator"))
    assert 'id="create-tenant"' in web.get("/tenants").text
    r = web.post("/tenants", data={"name": "gamma", "byok": "true", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    made = tenants.show_tenant(rt, "gamma")
    assert r.headers["location"] == f"/tenants/{made['id']}"
    assert made["byok_feature"] and made["byok_vault"]["name"] == "byok-gamma"
    assert _audited(rt, "tenant.create")[-1].endswith(":operator")
    before = _count(rt, Tenant)
    # Missing CSRF (and a missing name): the documented 403 first, nothing created.
    r = web.post("/tenants", data={}, follow_redirects=False)
    assert r.status_code == 403 and "did not come from this site" in alert(r.text)
    # Bad input: a clear message, nothing created.
    r = web.post("/tenants", data={"name": "bad name!", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 400 and "tenant name" in alert(r.text)
    r = web.post("/tenants", data={"name": "gamma", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 409 and "already exists" in alert(r.text)
    assert _count(rt, Tenant) == before
    # A tenant admin and a reader: no form, and the POST is 403 permission_denied.
    for role in ("tenant_admin", "reader"):
        csrf = sign_in(web, token(rt, role, "alpha"))
        assert 'id="create-tenant"' not in web.get("/tenants").text
        r = web.post("/tenants", data={"name": f"x-{role}", "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 403 and "may not change" in alert(r.text), role
    assert _count(rt, Tenant) == before


def test_environments_created_from_the_tenant_page_and_listed_there(web: TestClient, rt: Runtime) -> None:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    environments.create_environment(rt, b["id"], "beta-prod")
    csrf = sign_in(web, token(rt, "tenant_admin", "alpha"))
    page = web.get(f"/tenants/{a['id']}").text
    assert 'id="create-environment"' in page and "No environments yet." in page
    form = {"tenant": a["id"], "name": "alpha-prod", "region": "eu", "type": "production", "csrf": csrf}
    r = web.post("/environments", data=form, follow_redirects=False)
    assert r.status_code == 303
    env = environments.show_environment(rt, "alpha-prod")
    assert r.headers["location"] == f"/environments/{env['id']}"
    assert (env["tenant"]["id"], env["region"], env["type"]) == (a["id"], "eu", "production")
    assert _audited(rt, "environment.create")[-1].endswith(":tenant_admin")
    page = web.get(f"/tenants/{a['id']}").text
    assert f'href="/environments/{env["id"]}">alpha-prod</a>' in page and "beta-prod" not in page
    before = _count(rt, Environment)
    # Another tenant's id: like one that does not exist, nothing created.
    r = web.post("/environments", data={**form, "tenant": b["id"], "name": "sneaky"}, follow_redirects=False)
    assert r.status_code == 404 and "tenant" in alert(r.text) and "beta-prod" not in r.text
    # Bad input: region, type, name.
    for field, value, words in (
        ("region", "mars", "region"),
        ("type", "galactic", "environment type"),
        ("name", "-bad", "environment name"),
    ):
        r = web.post("/environments", data={**form, "name": "alpha-x", field: value}, follow_redirects=False)
        assert r.status_code == 400 and words in alert(r.text), (field, r.text[-600:])
    r = web.post("/environments", data={**form, "csrf": "0" * 64}, follow_redirects=False)
    assert r.status_code == 403
    # A reader may not.
    csrf_r = sign_in(web, token(rt, "reader", "alpha"))
    assert 'id="create-environment"' not in web.get(f"/tenants/{a['id']}").text
    r = web.post("/environments", data={**form, "name": "alpha-r", "csrf": csrf_r}, follow_redirects=False)
    assert r.status_code == 403
    assert _count(rt, Environment) == before


def test_environment_list_filters_search_and_pages(web: TestClient, rt: Runtime) -> None:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    names = []
    for i in range(30):
        tid = a["id"] if i % 3 else b["id"]
        kind = "production" if i % 2 else "sandbox"
        name = f"{'alpha' if i % 3 else 'beta'}-{i:02d}"
        environments.create_environment(rt, tid, name, env_type=kind, region="us" if i % 5 == 0 else "eu")
        names.append(name)
    sign_in(web, token(rt, "operator"))

    def listed(url: str) -> tuple[list[str], str | None]:
        r = web.get(url)
        assert r.status_code == 200, r.text[-500:]
        rows = re.findall(r'<th scope="row"><a href="/environments/env_[0-9a-f]+">([^<]+)</a>', r.text)
        nxt = re.search(r'href="([^"]+)" rel="next"', r.text)
        return rows, nxt.group(1).replace("&amp;", "&") if nxt else None

    # Every environment exactly once, in name order, over pages of 25.
    seen: list[str] = []
    url: str | None = "/environments"
    while url:
        rows, url = listed(url)
        assert len(rows) <= 25
        seen += rows
    assert seen == sorted(names)
    # Filters (combined with the search and with pages).
    rows, _ = listed("/environments?q=ALPHA-1&type=production")
    assert rows == sorted(n for n in names if n.startswith("alpha-1") and int(n[-2:]) % 2)
    rows, _ = listed(f"/environments?tenant={b['id']}&region=us")
    assert rows == sorted(f"beta-{i:02d}" for i in range(30) if i % 3 == 0 and i % 5 == 0)
    rows, _ = listed("/environments?state=locked")
    assert rows == []
    r = web.get("/environments?mode=quantum")
    assert r.status_code == 400 and "mode must be one of" in alert(r.text)
    # A tenant admin sees its tenant only, and naming the other tenant is "not found".
    sign_in(web, token(rt, "tenant_admin", "alpha"))
    seen = []
    url = "/environments"
    while url:
        rows, url = listed(url)
        seen += rows
    assert seen == sorted(n for n in names if n.startswith("alpha"))
    r = web.get(f"/environments?tenant={b['id']}")
    assert r.status_code == 404 and "beta-" not in r.text


def test_features_on_and_off(web: TestClient, rt: Runtime) -> None:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    env = environments.create_environment(rt, a["id"], "alpha-prod")
    benv = environments.create_environment(rt, b["id"], "beta-prod")
    csrf = sign_in(web, token(rt, "tenant_admin", "alpha"))
    page = web.get(f"/environments/{env['id']}").text
    assert 'id="feature-on"' in page
    r = web.post(f"/environments/{env['id']}/features", data={"feature": "search", "csrf": csrf})
    assert r.status_code == 200 and 'aria-label="Turn search off"' in r.text  # followed the redirect
    assert environments.show_environment(rt, "alpha-prod")["features"] == ["search"]
    r = web.post(
        f"/environments/{env['id']}/features/disable",
        data={"feature": "search", "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert environments.show_environment(rt, "alpha-prod")["features"] == []
    assert _audited(rt, "environment.feature.disable")[-1].endswith(":tenant_admin")
    # Bad input and refusals leave the features as they are.
    environments.enable_feature(rt, "alpha-prod", "audit")
    for path, feature, status, words in (
        ("features", "teleport", 400, "unknown feature"),
        ("features/disable", "teleport", 400, "unknown feature"),
        ("features/disable", "search", 409, "does not have the search feature on"),
    ):
        r = web.post(f"/environments/{env['id']}/{path}", data={"feature": feature, "csrf": csrf})
        assert r.status_code == status and words in alert(r.text)
    r = web.post(f"/environments/{env['id']}/features/disable", data={"feature": "audit"})
    assert r.status_code == 403  # no CSRF token
    r = web.post(f"/environments/{benv['id']}/features", data={"feature": "audit", "csrf": csrf})
    assert r.status_code == 404 and "environment" in alert(r.text)
    assert environments.show_environment(rt, "beta-prod")["features"] == []
    csrf_r = sign_in(web, token(rt, "reader", "alpha"))
    assert 'id="feature-on"' not in web.get(f"/environments/{env['id']}").text
    r = web.post(f"/environments/{env['id']}/features/disable", data={"feature": "audit", "csrf": csrf_r})
    assert r.status_code == 403
    assert environments.show_environment(rt, "alpha-prod")["features"] == ["audit"]
    # The API route, same service.
    admin = {"Authorization": f"Bearer {token(rt, 'tenant_admin', 'alpha')}"}
    r = web.delete(f"/api/v1/environments/{env['id']}/features/audit", headers=admin)
    assert r.status_code == 200
    assert r.json() == {"environment": {"id": env["id"], "name": "alpha-prod"}, "features": []}
    r = web.delete(f"/api/v1/environments/{benv['id']}/features/audit", headers=admin)
    assert r.status_code == 404
