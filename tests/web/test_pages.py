"""Admin-center pages without a browser (TestClient): sign-in, the BYOK finalization countdown,
labels on every form control, HTML errors, and the security headers."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.clock import FixedClock
from keyshift.control import environments, tenants, tokens
from keyshift.db.models import VaultRecord
from keyshift.runtime import Runtime


@pytest.fixture
def client(sqlite_rt: Runtime) -> Any:
    with TestClient(create_app(sqlite_rt), raise_server_exceptions=False) as c:
        yield c


def login(client: TestClient, token: str) -> None:
    form = client.get("/login").text
    login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', form)
    assert login_csrf
    r = client.post(
        "/login", data={"token": token, "login_csrf": login_csrf.group(1)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.h1 = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        if tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        if tag == "h1":
            self.h1 += 1


def _accessible(html: str) -> None:
    p = _Controls()
    p.feed(html)
    assert p.h1 == 1, "one h1 per page"
    for c in p.controls:
        assert c.get("id") in p.labels, f"form control without a label: {c}"
    assert '<html lang="en">' in html


def test_pages_render_with_labels_and_security_headers(client: TestClient, sqlite_rt: Runtime) -> None:
    t = tenants.create_tenant(sqlite_rt, "contoso", byok=True)
    env = environments.create_environment(sqlite_rt, t["id"], "contoso-prod")
    login(client, tokens.create_token(sqlite_rt, "operator")["token"])
    for path in [
        "/environments",
        "/environments?view=policies",
        f"/environments/{env['id']}",
        "/policies",
        "/jobs",
        "/tenants",
        f"/tenants/{t['id']}",
    ]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        _accessible(r.text)
    assert client.get("/login").status_code == 200


def test_byok_finalization_countdown(client: TestClient, sqlite_rt: Runtime) -> None:
    clock = sqlite_rt.clock
    assert isinstance(clock, FixedClock)
    t = tenants.create_tenant(sqlite_rt, "contoso", byok=True)
    with sqlite_rt.transaction() as s:
        vault = s.get(VaultRecord, t["byok_vault"]["id"])
        assert vault is not None
        vault.state, vault.delete_after = "scheduled_deletion", clock.now() + timedelta(days=27, hours=5)
    login(client, tokens.create_token(sqlite_rt, "tenant_admin", tenant="contoso")["token"])
    html = client.get(f"/tenants/{t['id']}").text
    assert "27 days 5 hours" in html and "scheduled_deletion" in html


def test_signed_out_pages_redirect_and_other_tenants_are_not_found(
    client: TestClient, sqlite_rt: Runtime
) -> None:
    r = client.get("/environments", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    a = tenants.create_tenant(sqlite_rt, "alpha")
    b = tenants.create_tenant(sqlite_rt, "beta")
    env_b = environments.create_environment(sqlite_rt, b["id"], "beta-prod")
    login(client, tokens.create_token(sqlite_rt, "tenant_admin", tenant=a["id"])["token"])
    r = client.get(f"/environments/{env_b['id']}")
    assert r.status_code == 404 and "beta" not in r.text.replace(env_b["id"], "")
    assert "beta-prod" not in client.get("/environments").text
    # A reader sees no forms that change anything.
    client.cookies.clear()
    login(client, tokens.create_token(sqlite_rt, "reader", tenant=b["id"])["token"])
    page = client.get(f"/environments/{env_b['id']}").text
    assert "Enable managed environment" not in page and "Create a policy" not in client.get("/policies").text


def test_operator_turns_the_byok_flag_off_from_the_tenant_page(
    client: TestClient, sqlite_rt: Runtime
) -> None:
    t = tenants.create_tenant(sqlite_rt, "contoso", byok=True)
    admin = tokens.create_token(sqlite_rt, "tenant_admin", tenant="contoso")["token"]
    login(client, admin)
    assert "Turn off the BYOK feature" not in client.get(f"/tenants/{t['id']}").text
    client.cookies.clear()
    login(client, tokens.create_token(sqlite_rt, "operator")["token"])
    page = client.get(f"/tenants/{t['id']}").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf and "Turn off the BYOK feature" in page
    r = client.post(
        f"/tenants/{t['id']}/byok-flag/remove",
        data={"ticket": "CASE-42", "csrf": csrf.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    view = tenants.show_tenant(sqlite_rt, t["id"])
    assert view["byok_feature"] is False and view["byok_flag_ticket"] == "CASE-42"


def test_remove_environment_from_the_policy_page(client: TestClient, sqlite_rt: Runtime) -> None:
    from keyshift.control import health, policies, vaults
    from keyshift.jobs.runner import Worker
    from keyshift.migrate import link

    rt = sqlite_rt
    t = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, t["id"], "contoso-prod")
    vaults.create_local_vault(rt, "contoso-vault", purge_protection=True, tenant_id=t["id"])
    vaults.create_key(rt, "contoso-vault", "cmk", "RSA", 2048)
    pol = policies.create_policy(
        rt, t["id"], "cmk-eu", region=env["region"], vault="contoso-vault", key="cmk"
    )
    vaults.grant_key(rt, "contoso-vault", "cmk", pol["identity"], "get,wrapKey,unwrapKey")
    health.policy_health(rt, pol["id"])
    environments.set_managed(rt, env["id"], True)
    link.start_link(rt, pol["id"], env["id"])
    Worker(rt).run_once()
    assert environments.show_environment(rt, env["id"])["encryption"]["mode"] == "cmk"

    login(client, tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"])
    page = client.get(f"/policies/{pol['id']}").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf and "Remove contoso-prod from the policy" in page
    r = client.post(
        f"/policies/{pol['id']}/environments/{env['id']}/remove",
        data={"csrf": csrf.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/job_")
    job_page = client.get(r.headers["location"]).text  # the job names its environment and policy
    assert f'href="/environments/{env["id"]}">contoso-prod</a>' in job_page
    assert f'href="/policies/{pol["id"]}">' in job_page
    Worker(rt).run_once()
    assert environments.show_environment(rt, env["id"])["encryption"]["mode"] == "platform"
