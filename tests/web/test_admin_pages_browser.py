"""The tenant, environment, audit-trail and job pages clicked through in headless Chromium against a
real `keyshift serve` and `keyshift worker`, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from keyshift.control import environments, tenants, tokens
from keyshift.control.pkcs12_files import load_rsa_key
from keyshift.jobs import store
from keyshift.runtime import Runtime

from .conftest import PLATFORM_NAME, Served, free_port, shot

pytestmark = pytest.mark.browser
PW = "correct horse battery"
# The same server as tests/conftest.py's fixtures (a module-scoped server cannot use them).
PG_BASE = os.environ.get("KEYSHIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`keyshift serve` + `keyshift worker` over a fresh home on the given backend."""
    from keyshift.bootstrap import init_home

    db_url = None
    schema = None
    if request.param == "postgres":
        try:
            with create_engine(PG_BASE, connect_args={"connect_timeout": 3}).connect() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:
            pytest.skip(f"PostgreSQL at {PG_BASE} unreachable: {type(exc).__name__}")
        schema = f"ks_{secrets.token_hex(6)}"
        with create_engine(PG_BASE).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in PG_BASE else "?"
        db_url = f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
    home = tmp_path_factory.mktemp(f"web-{request.param}") / "home"
    init_home(home, database_url=db_url)
    port = free_port()
    env = dict(os.environ, KEYSHIFT_HOME=str(home), KEYSHIFT_PLATFORM_NAME=PLATFORM_NAME)
    env.pop("KEYSHIFT_DATABASE_URL", None)
    s = Served(url=f"http://127.0.0.1:{port}", home=home, env=env)
    try:
        with s.running(port):
            yield s
    finally:
        if schema is not None:
            with create_engine(PG_BASE).begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def _rt(site: Served) -> Runtime:
    return Runtime.open(home=site.home, principal="operator:test-setup")


def _login(page: Any, site: Served, token: str) -> None:
    page.goto(f"{site.url}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/environments$"))


def test_operator_creates_tenant_environment_byok_key_and_reads_the_audit_trail(
    page: Any, site: Served, tmp_path: Path
) -> None:
    with _rt(site) as rt:
        token = tokens.create_token(rt, "operator")["token"]
    _login(page, site, token)
    page.get_by_role("link", name="Tenants", exact=True).click()
    page.get_by_label("Tenant name").fill("fabrikam")
    page.get_by_label("Legacy BYOK tenant").check()
    page.get_by_role("button", name="Create tenant").click()
    page.wait_for_url(re.compile(r".*/tenants/ten_[0-9a-f]+$"))
    assert page.get_by_role("heading", name="fabrikam", level=1).is_visible()
    # An environment from the tenant page.
    page.get_by_label("Environment name").fill("fab-prod")
    page.get_by_label("Type").select_option("production")
    page.get_by_role("button", name="Create environment").click()
    page.wait_for_url(re.compile(r".*/environments/env_[0-9a-f]+$"))
    env_url = page.url
    # Features: on, then off.
    page.get_by_label("Turn a feature on").select_option("audit")
    page.get_by_role("button", name="Turn on").click()
    page.get_by_role("button", name="Turn audit off").click()
    page.wait_for_url(env_url)
    assert page.get_by_role("button", name="Turn audit off").count() == 0
    assert "No feature is on." in page.locator("#features").inner_text()
    # A BYOK key: generated and downloaded once, then activated.
    page.get_by_role("link", name="fabrikam").first.click()
    page.get_by_label("Key name").first.fill("k1")
    page.get_by_label("Password for the PKCS#12 file").fill(PW)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Generate and download").click()
    saved = tmp_path / "k1.pfx"
    dl.value.save_as(saved)
    assert dl.value.suggested_filename == "k1.pfx"
    load_rsa_key(saved.read_bytes(), PW.encode(), "download")  # opens with the password
    page.reload()
    page.get_by_role("button", name="Activate k1").click()
    page.wait_for_url(re.compile(r".*/tenants/ten_[0-9a-f]+$"))
    with _rt(site) as rt:
        assert [(k["name"], k["state"]) for k in tenants.show_tenant(rt, "fabrikam")["byok_keys"]] == [
            ("k1", "active")
        ]
    shot(page, f"10-tenant-byok-{site.home.parent.name}")
    # The environment list's search.
    page.get_by_role("link", name="Environments", exact=True).click()
    page.get_by_label("Name contains").fill("fab-")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#environments tbody tr").count() == 1
    # The audit trail, filtered to environment actions: newest first, names shown.
    page.get_by_role("link", name="Audit trail").click()
    page.get_by_label("Action (end with * for a prefix)").fill("environment.*")
    page.get_by_role("button", name="Filter").click()
    actions = page.locator("#audit tbody th").all_inner_texts()
    assert actions[:3] == [
        "environment.feature.disable",
        "environment.feature.enable",
        "environment.create",
    ], actions
    assert "environment fab-prod" in page.locator("#audit tbody tr").first.inner_text()
    shot(page, f"11-audit-{site.home.parent.name}")


def test_failed_job_resume_and_cancel_buttons_and_tenant_scoping(page: Any, site: Served) -> None:
    with _rt(site) as rt:
        a = tenants.create_tenant(rt, "alpha")
        b = tenants.create_tenant(rt, "beta")
        env = environments.create_environment(rt, a["id"], "alpha-prod")
        environments.create_environment(rt, b["id"], "beta-prod")
        with rt.transaction() as s:
            job = store.create_job(rt, s, "link", environment_id=env["id"], tenant_id=a["id"])
            store.mark_failed(s, job.id, "vault_unavailable", "vault unreachable (test)", rt.clock.now())
            job_id = job.id
        admin = tokens.create_token(rt, "tenant_admin", tenant="alpha")["token"]
    _login(page, site, admin)
    page.get_by_role("link", name="Jobs").click()
    row = page.locator("#jobs tbody tr").first
    assert "link of alpha-prod" in row.inner_text() and "vault_unavailable" in row.inner_text()
    assert "can be resumed" in row.inner_text()
    assert "beta" not in page.locator("main").inner_text()
    row.get_by_role("link", name="link of alpha-prod").click()
    page.wait_for_url(re.compile(rf".*/jobs/{job_id}$"))
    assert page.locator("#job-resumable").is_visible() and not page.locator("#job-done").is_visible()
    assert page.get_by_role("button", name="Resume").is_visible()
    shot(page, f"12-job-failed-{site.home.parent.name}")
    page.get_by_role("button", name="Cancel the job").click()
    page.wait_for_url(re.compile(rf".*/jobs/{job_id}$"))
    assert page.locator("#job-state").inner_text() == "cancelled"
    assert page.locator("#job-done").is_visible()
    assert page.get_by_role("button", name="Resume").count() == 0
    # The audit trail of a tenant admin: its tenant's events only.
    page.get_by_role("link", name="Audit trail").click()
    body = page.locator("main").inner_text()
    assert "job.cancel" in body and "alpha-prod" in body
    assert "beta" not in body and page.get_by_label("Tenant").count() == 0
    # No tenant creation and no BYOK actions for a tenant admin.
    page.get_by_role("link", name="Tenant", exact=True).click()
    assert page.locator("#create-tenant").count() == 0
