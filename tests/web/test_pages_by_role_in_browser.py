"""Every admin-center page, opened in Chromium by each role: the roles that may use it get the page,
the others the 403 page, and another tenant's objects answer 404 (nothing about them shown)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from keyshift.control import environments, tenants, tokens, vaults
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime

from .conftest import Served

pytestmark = pytest.mark.browser


def _world(served: Served) -> dict[str, Any]:
    from migrate.helpers import make_policy

    w: dict[str, Any] = {"tokens": {}}
    with Runtime.open(home=served.home, principal="operator:role-matrix") as rt:
        for name in ("rolea", "roleb"):
            t = tenants.create_tenant(rt, name)
            env = environments.create_environment(rt, t["id"], f"{name}-prod", env_type="production")
            vaults.create_local_vault(
                rt, f"{name}-vault", soft_delete_days=90, purge_protection=True, tenant_id=t["id"]
            )
            vaults.create_key(rt, f"{name}-vault", "cmk", "RSA", 2048)
            w[name] = {"tenant": t["id"], "env": env["id"]}
        pol = make_policy(rt, "rolea", "rolea-pol", "rolea-vault", "cmk")
        environments.set_managed(rt, "rolea-prod", True)
        job = start_link(rt, "rolea-pol", "rolea-prod")  # the served worker may run it meanwhile
        w["rolea"].update(policy=pol, job=job["id"])
        w["tokens"] = {
            "operator": tokens.create_token(rt, "operator")["token"],
            "admin": tokens.create_token(rt, "tenant_admin", tenant="rolea")["token"],
            "reader": tokens.create_token(rt, "reader", tenant="rolea")["token"],
            "other_admin": tokens.create_token(rt, "tenant_admin", tenant="roleb")["token"],
        }
    return w


def _sign_in(page: Any, served: Served, token: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{served.url}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/environments$"))


def test_every_page_for_every_role(page: Any, served: Served) -> None:
    w = _world(served)
    a = w["rolea"]
    pages = {
        "environments": "/environments",
        "environment": f"/environments/{a['env']}",
        "coverage": f"/environments/{a['env']}/coverage",
        "policies": "/policies",
        "policy": f"/policies/{a['policy']}",
        "jobs": "/jobs",
        "job": f"/jobs/{a['job']}",
        "tenants": "/tenants",
        "tenant": f"/tenants/{a['tenant']}",
        "audit": "/audit",
        "vaults": "/vaults",
        "vault": "/vaults/rolea-vault",
        "key": "/vaults/rolea-vault/keys/cmk",
        "tokens": "/tokens",
    }
    own = {k: 200 for k in pages}
    expected = {
        "operator": own,
        "admin": {**own, "tokens": 403},
        "reader": {**own, "tokens": 403},
        # another tenant's admin: the lists answer (its own, empty of rolea), rolea's objects do not
        "other_admin": {
            **own,
            "tokens": 403,
            **{k: 404 for k in ("environment", "coverage", "policy", "job", "tenant", "vault", "key")},
        },
    }
    seen: dict[str, dict[str, int]] = {}
    for role, token in w["tokens"].items():
        _sign_in(page, served, token)
        seen[role] = {}
        for name, path in pages.items():
            response = page.goto(served.url + path)
            seen[role][name] = response.status
            text = page.content()
            assert "rolea-prod" not in text or role != "other_admin", (role, name)
            if response.status == 200:
                assert page.locator("h1").count() >= 1 and "/login" not in page.url, (role, name)
    assert seen == expected

    # writing forms: the reader sees the key page without them, the tenant admin with them
    for role, forms in (("reader", 0), ("admin", 1)):
        _sign_in(page, served, w["tokens"][role])
        page.goto(f"{served.url}/vaults/rolea-vault/keys/cmk")
        has = page.locator("main form[method=post] button").count()  # not the header's sign-out
        assert (has > 0) == bool(forms), (role, has)
