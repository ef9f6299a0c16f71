"""The seed's procedure done entirely in the browser (headless Chromium, real `keyshift serve` and
`keyshift worker`, on SQLite and on PostgreSQL): create a key in the tenant's vault, create the
policy picking that key, grant the policy identity get/wrapKey/unwrapKey on it, check health, make
an environment managed, add it to the policy, watch the job end, and find the environment under
"Environments with policies" and on its encryption page. Plus the pages' role limits in a browser."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from keyshift.control import environments, tenants, tokens, vaults
from keyshift.runtime import Runtime

from .conftest import PLATFORM_NAME, Served, free_port, shot

pytestmark = pytest.mark.browser


def _pg_schema() -> Iterator[str]:
    from tests.conftest import PG_BASE, pg_skip_reason

    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"ks_{secrets.token_hex(6)}"
    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_BASE else "?"
    try:
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`keyshift serve` and `keyshift worker` over a home on SQLite or on a fresh PostgreSQL schema."""
    urls = _pg_schema() if request.param == "postgres" else iter([None])
    url = next(urls)
    home = tmp_path_factory.mktemp(f"seed-{request.param}") / "home"
    port = free_port()
    env = dict(
        os.environ,
        KEYSHIFT_HOME=str(home),
        KEYSHIFT_PLATFORM_NAME=PLATFORM_NAME,
        KEYSHIFT_HEALTH_INTERVAL_SECONDS="1",
    )
    env.pop("KEYSHIFT_DATABASE_URL", None)
    from keyshift.bootstrap import init_home

    init_home(home, database_url=url)
    s = Served(url=f"http://127.0.0.1:{port}", home=home, env=env)
    try:
        with s.running(port):
            yield s
    finally:
        for _ in urls:  # drops the PostgreSQL schema
            pass


def _setup(served: Served, name: str) -> dict[str, str]:
    """What exists before the procedure: a tenant, its environment, its (empty) vault, tokens."""
    with Runtime.open(home=served.home, principal="operator:test-setup") as rt:
        t = tenants.create_tenant(rt, name)
        env = environments.create_environment(rt, t["id"], f"{name}-prod", env_type="production")
        vaults.create_local_vault(
            rt, f"{name}-vault", soft_delete_days=90, purge_protection=True, tenant_id=t["id"]
        )
        admin = tokens.create_token(rt, "tenant_admin", tenant=name)["token"]
        reader = tokens.create_token(rt, "reader", tenant=name)["token"]
    return {"admin": admin, "reader": reader, "env_id": env["id"], "tenant_id": t["id"]}


def _login(page: Any, served: Served, token: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{served.url}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/environments$"))


def test_the_seed_procedure_entirely_in_the_browser(page: Any, served_db: Served) -> None:
    served = served_db
    ids = _setup(served, "woodgrove")
    _login(page, served, ids["admin"])

    # 1. Create a key in the tenant's vault.
    page.get_by_role("link", name="Vaults", exact=True).click()
    page.get_by_role("link", name="woodgrove-vault").click()
    assert page.locator("#vault-purge-protection").inner_text() == "on"
    assert page.locator("#vault-reachable").inner_text().startswith("reachable")
    page.get_by_label("Key name").fill("woodgrove-cmk")
    page.get_by_label("Key type").select_option("RSA")
    page.get_by_label("Key size (bits)").select_option("2048")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r".*/vaults/woodgrove-vault/keys/woodgrove-cmk$"))
    assert page.locator("#flash").inner_text().startswith("Key woodgrove-cmk created")
    shot(page, "11-key-created")

    # 2. Create the policy, picking the key from the vault's keys.
    page.get_by_role("link", name="Policies", exact=True).click()
    page.get_by_label("Policy name").fill("woodgrove-cmk-policy")
    page.get_by_label("Region").select_option("eu")
    page.get_by_label("Key vault").select_option("woodgrove-vault")
    page.get_by_label("Key", exact=True).select_option("woodgrove-cmk")
    page.get_by_role("button", name="Create policy").click()
    page.wait_for_url(re.compile(r".*/policies/pol_[0-9a-f]+$"))
    policy_url = page.url
    assert page.locator("#flash").inner_text().startswith("Policy woodgrove-cmk-policy created.")
    identity = page.locator("#policy-identity").inner_text()

    # 3. Grant the policy identity get, wrapKey and unwrapKey on the key.
    page.get_by_role("link", name="Grant it on the key").click()
    assert page.get_by_label("Identity").input_value() == identity
    for perm in ("get", "wrapKey", "unwrapKey"):
        assert page.get_by_label(perm, exact=True).is_checked()
    page.get_by_role("button", name="Grant", exact=True).click()
    assert page.locator("#flash").inner_text() == (
        f"Granted get, unwrapKey, wrapKey on key woodgrove-cmk to {identity}."
    )
    assert page.locator("#key-grants").get_by_role("row", name=re.compile(identity)).count() == 1
    shot(page, "12-key-granted")

    # 4. The policy is healthy now.
    page.get_by_role("link", name="woodgrove-cmk-policy").click()
    assert page.url == policy_url
    page.get_by_role("button", name="Check health now").click()
    assert page.locator("#policy-health").inner_text() == "healthy"
    assert page.locator("#flash").inner_text() == "Health checked: healthy."

    # 5. Mark the environment managed.
    page.get_by_role("link", name="Environments", exact=True).click()
    page.get_by_role("link", name="woodgrove-prod").click()
    page.get_by_role("button", name="Enable managed environment").click()
    assert page.locator("#flash").inner_text() == "woodgrove-prod is now a managed environment."

    # 6. Add it to the policy and watch the job to completion.
    page.goto(policy_url)
    page.get_by_label("Environment").select_option(label="woodgrove-prod")
    page.get_by_role("button", name="Add environment").click()
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-f]+$"))
    assert page.locator("#flash").inner_text() == "Adding the environment to the policy: job started."
    page.wait_for_function(
        "() => ['succeeded','failed','cancelled'].includes(document.getElementById('job-state').textContent)",
        timeout=90_000,
    )
    assert page.locator("#job-state").inner_text() == "succeeded", page.locator("#job-error").inner_text()
    shot(page, "13-seed-job-done")

    # 7. "Environments with policies" lists it; its encryption page shows the customer key.
    page.get_by_role("link", name="Environments", exact=True).click()
    page.get_by_role("link", name="Environments with policies").click()
    row = page.get_by_role("row", name=re.compile("woodgrove-prod"))
    assert row.count() == 1 and "woodgrove-cmk-policy" in row.inner_text()
    row.get_by_role("link", name="woodgrove-prod").click()
    assert page.locator("#managed-by").inner_text() == f"CustomerVia{PLATFORM_NAME}"
    assert page.locator("#enc-status").inner_text() != ""
    card = page.locator("section.card", has_text="Environment encryption").inner_text()
    assert "woodgrove-vault/woodgrove-cmk" in card, card
    assert page.get_by_role("link", name="woodgrove-cmk-policy").count() == 1
    shot(page, "14-seed-encryption-page")


def test_roles_that_may_not_use_a_page_get_the_403_page_in_the_browser(page: Any, served_db: Served) -> None:
    ids = _setup(served_db, "litware")
    with Runtime.open(home=served_db.home, principal="operator:test-setup") as rt:
        vaults.create_key(rt, "litware-vault", "litware-key", "AES", 256)
        other = tokens.create_token(rt, "operator", label="someone else")["id"]
    # A tenant admin: no Tokens menu, and the page itself is the documented 403 page.
    _login(page, served_db, ids["admin"])
    assert page.get_by_role("link", name="Tokens", exact=True).count() == 0
    response = page.goto(f"{served_db.url}/tokens")
    assert response.status == 403
    assert "permission_denied" in page.content() and other not in page.content()
    page.get_by_role("link", name="Back to environments").click()
    page.wait_for_url(re.compile(r".*/environments$"))
    # A reader sees the key but no button that changes it.
    _login(page, served_db, ids["reader"])
    page.goto(f"{served_db.url}/vaults/litware-vault/keys/litware-key")
    assert page.get_by_role("heading", name="Key litware-key").count() == 1
    for name in ("Rotate", "Disable key", "Grant"):
        assert page.get_by_role("button", name=name, exact=True).count() == 0
    shot(page, "15-reader-key-page")


def test_operator_creates_sees_once_and_revokes_a_token_in_the_browser(page: Any, served_db: Served) -> None:
    ids = _setup(served_db, "adatum")
    with Runtime.open(home=served_db.home, principal="operator:test-setup") as rt:
        operator = tokens.create_token(rt, "operator", label="browser operator")["token"]
    _login(page, served_db, operator)
    page.get_by_role("link", name="Tokens", exact=True).click()
    page.get_by_label("Role", exact=True).select_option("tenant_admin")
    page.get_by_label("Tenant", exact=True).select_option(label="adatum")
    page.get_by_label("Label").fill("adatum second admin")
    page.get_by_role("button", name="Create token").click()
    created = page.get_by_label("Token", exact=True).input_value()
    assert re.fullmatch(r"tok_[0-9a-f]{20}\.[A-Za-z0-9_-]{43}", created)
    shot(page, "16-token-created")
    token_id = created.partition(".")[0]
    # The secret is on no other page: filter the list to the tenant and look.
    page.goto(f"{served_db.url}/tokens?tenant={ids['tenant_id']}")
    assert token_id in page.content() and created.partition(".")[2] not in page.content()
    page.get_by_role("button", name=f"Revoke {token_id}").click()
    assert page.locator("#flash").inner_text() == f"Token {token_id} revoked; it no longer works."
    r = httpx.get(f"{served_db.url}/api/v1/whoami", headers={"Authorization": f"Bearer {created}"})
    assert r.status_code == 401
