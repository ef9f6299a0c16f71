"""Click through the admin center in a real headless Chromium against a real `keyshift serve`."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from keyshift.control import environments, tenants, tokens, vaults
from keyshift.runtime import Runtime

from .conftest import PLATFORM_NAME, Served, shot

pytestmark = pytest.mark.browser


def _setup(served: Served, name: str) -> dict[str, str]:
    with Runtime.open(home=served.home, principal="operator:test-setup") as rt:
        t = tenants.create_tenant(rt, name)
        env = environments.create_environment(rt, t["id"], f"{name}-prod", env_type="production")
        vaults.create_local_vault(
            rt, f"{name}-vault", soft_delete_days=90, purge_protection=True, tenant_id=t["id"]
        )
        vaults.create_key(rt, f"{name}-vault", "cmk", "RSA", 2048)
        token = tokens.create_token(rt, "tenant_admin", tenant=name)["token"]
    return {"token": token, "env_id": env["id"], "tenant_id": t["id"], "name": name}


def _login(page: Any, served: Served, token: str) -> None:
    page.goto(f"{served.url}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/environments$"))


def test_login_rejects_a_bad_token_and_protects_the_session(page: Any, served: Served) -> None:
    page.goto(f"{served.url}/environments")
    page.wait_for_url(re.compile(r".*/login$"))  # not signed in -> sign-in page
    shot(page, "01-login")
    page.get_by_label("API token").fill("tok_00000000000000000000.nope")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Sign-in failed."
    token = _setup(served, "northwind")["token"]
    _login(page, served, token)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["ks_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    # A form post with a wrong or missing CSRF token is refused, even with the session cookie,
    # and changes nothing.
    url = f"{served.url}/environments/northwind-prod/managed"
    r = page.request.post(url, form={"managed": "true", "csrf": "0" * 64})
    assert r.status == 403 and "did not come from this site" in r.text()
    assert (
        page.request.post(url, form={"managed": "true"}).status == 403
    )  # a missing field is refused like a wrong one
    with Runtime.open(home=served.home) as rt:
        assert environments.show_environment(rt, "northwind-prod")["managed"] is False


def test_policy_add_environment_job_and_customer_via_platform(page: Any, served: Served) -> None:
    ids = _setup(served, "contoso")
    token = ids["token"]
    _login(page, served, token)
    shot(page, "02-environments")

    # Create a policy.
    page.get_by_role("link", name="Policies", exact=True).click()
    page.get_by_label("Policy name").fill("contoso-cmk")
    page.get_by_label("Region").select_option("eu")
    page.get_by_label("Key vault").select_option("contoso-vault")
    page.get_by_label("Key", exact=True).select_option("cmk")  # the vault's keys, not free text
    page.get_by_role("button", name="Create policy").click()
    page.wait_for_url(re.compile(r".*/policies/pol_[0-9a-f]+$"))
    identity = page.locator("#policy-identity").inner_text()
    assert identity

    # The key's owner grants the policy identity (a script using the REST API).
    r = httpx.post(
        f"{served.url}/api/v1/vaults/contoso-vault/keys/cmk/grants",
        json={"identity": identity, "permissions": ["get", "wrapKey", "unwrapKey"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    page.get_by_role("button", name="Check health now").click()
    assert page.locator("#policy-health").inner_text() == "healthy"
    shot(page, "03-policy-healthy")

    # Make the environment a managed environment, then add it to the policy.
    page.goto(f"{served.url}/environments/{ids['env_id']}")
    page.get_by_role("button", name="Enable managed environment").click()
    page.get_by_role("link", name="Policies", exact=True).click()
    page.get_by_role("link", name="contoso-cmk").click()
    page.get_by_label("Environment").select_option(label="contoso-prod")
    # The job page polls its progress endpoint (live progress) until the job has ended.
    with page.expect_response(lambda r: r.url.endswith("/progress") and r.status == 200) as polled:
        page.get_by_role("button", name="Add environment").click()
    # Its body is read again through the page's own session: the page reloads itself once the job
    # has ended, and a response it navigated away from keeps no body.
    assert page.request.get(polled.value.url).json()["kind"] == "link"
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-f]+$"))
    state = page.locator("#job-state")
    page.wait_for_function(
        "() => ['succeeded','failed','cancelled'].includes(document.getElementById('job-state').textContent)",
        timeout=60_000,
    )
    shot(page, "04-job-finished")
    assert state.inner_text() == "succeeded", page.locator("#job-error").inner_text()
    assert page.locator("#job-done").is_visible()

    # The environment encryption page shows CustomerVia<PlatformName>.
    page.get_by_role("link", name="Open the environment").click()
    assert page.locator("#managed-by").inner_text() == f"CustomerVia{PLATFORM_NAME}"
    assert page.locator("#env-state").inner_text() == "enabled"
    shot(page, "05-environment-encryption")

    page.goto(f"{served.url}/environments?view=policies")
    assert page.get_by_role("row", name=re.compile("contoso-prod")).count() == 1
    shot(page, "06-environments-with-policies")
    page.goto(f"{served.url}/tenants/{ids['tenant_id']}")
    assert page.get_by_role("heading", name="Legacy BYOK status").count() == 1
    shot(page, "07-tenant-byok-status")
    page.goto(f"{served.url}/policies")
    row = page.get_by_role("row", name=re.compile("contoso-cmk"))
    assert "healthy" in row.inner_text()
    shot(page, "10-policies")


def _api(served: Served, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{served.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw
    )


def _wait_job(served: Served, token: str, location: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{served.url}{location}", headers={"Authorization": f"Bearer {token}"}).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def test_revoked_key_disables_the_environment_and_re_enable_restores_it(page: Any, served: Served) -> None:
    pytest.importorskip("keyshift.control.revocation", reason="revocation has not landed")
    ids = _setup(served, "tailspin")
    token = ids["token"]
    # Scripted part through the REST API: policy, grant, health, managed, add environment (202 + job).
    pol = _api(
        served,
        token,
        "POST",
        "/policies",
        json={
            "tenant": "tailspin",
            "name": "tailspin-cmk",
            "region": "eu",
            "vault": "tailspin-vault",
            "key": "cmk",
        },
    )
    assert pol.status_code == 201, pol.text
    grant = {"identity": pol.json()["identity"], "permissions": ["get", "wrapKey", "unwrapKey"]}
    assert (
        _api(served, token, "POST", "/vaults/tailspin-vault/keys/cmk/grants", json=grant).status_code == 200
    )
    assert _api(served, token, "POST", "/policies/tailspin-cmk/health").json()["health"] == "healthy"
    assert _api(
        served, token, "PUT", "/environments/tailspin-prod/managed", json={"managed": True}
    ).is_success
    added = _api(
        served, token, "POST", "/policies/tailspin-cmk/environments", json={"environment": "tailspin-prod"}
    )
    assert added.status_code == 202 and added.headers["retry-after"]
    assert _wait_job(served, token, added.headers["location"])["state"] == "succeeded"

    # The customer disables the key: the environment becomes disabled within the revocation bound.
    assert _api(served, token, "POST", "/vaults/tailspin-vault/keys/cmk/disable").status_code == 200
    _login(page, served, token)
    url = f"{served.url}/environments/{ids['env_id']}"
    deadline = time.monotonic() + 30
    while True:
        page.goto(url)
        if page.locator("#env-state").inner_text() == "disabled" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert page.locator("#env-state").inner_text() == "disabled"
    assert "disabled" in page.get_by_role("alert").inner_text()
    shot(page, "08-environment-disabled")

    # Access restored: the admin re-enables the environment from its page.
    assert _api(served, token, "POST", "/vaults/tailspin-vault/keys/cmk/enable").status_code == 200
    page.get_by_role("button", name="Re-enable").click()
    assert page.locator("#env-state").inner_text() == "enabled"
    assert page.locator("#managed-by").inner_text() == f"CustomerVia{PLATFORM_NAME}"
    shot(page, "09-environment-re-enabled")
