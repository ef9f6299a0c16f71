"""Restore before migration from the environment page (TestClient, SQLite and PostgreSQL): after a
BYOK -> CMK migration the page shows the 28-day window and a Restore button that starts the restore
job; other tenants and readers cannot; after the window the page says so and a restore is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keyshift.clock import FixedClock
from keyshift.control import environments, tenants
from keyshift.jobs import store
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime

from .webclient import alert, client_for, sign_in, token


@pytest.fixture
def web(rt: Runtime) -> Iterator[TestClient]:
    yield from client_for(rt)


def _migrated(rt: Runtime, tmp_path: Path) -> str:
    from migrate.helpers import byok_world, customer_key, make_policy, run

    w = byok_world(rt, tmp_path)
    vault, key = customer_key(rt, "fab-kv", "fab-cmk")
    make_policy(rt, "fabrikam", "fab-pol", vault, key)
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-1")
    job = start_link(rt, "fab-pol", "fab-prod")
    assert run(rt, job["id"]) == "succeeded"
    return str(w["envs"]["fab-prod"])


def test_restore_window_shown_and_restore_started_from_the_page(
    web: TestClient, rt: Runtime, tmp_path: Path, clock: FixedClock
) -> None:
    env_id = _migrated(rt, tmp_path)
    tenants.create_tenant(rt, "other")
    clock.advance(days=3, hours=2)
    csrf = sign_in(web, token(rt, "tenant_admin", "fabrikam"))
    page = web.get(f"/environments/{env_id}").text
    assert 'id="restore-window"' in page
    assert "pre-migration copy are kept 28 days" in page
    assert '<span id="restore-left">24 days 22 hours</span>' in page
    assert f'action="/environments/{env_id}/restore"' in page
    # Another tenant's admin: not found; a reader: no button, 403; no CSRF: 403. No job starts.
    other = sign_in(web, token(rt, "tenant_admin", "other"))
    r = web.post(f"/environments/{env_id}/restore", data={"csrf": other}, follow_redirects=False)
    assert r.status_code == 404
    reader = sign_in(web, token(rt, "reader", "fabrikam"))
    assert f'action="/environments/{env_id}/restore"' not in web.get(f"/environments/{env_id}").text
    r = web.post(f"/environments/{env_id}/restore", data={"csrf": reader}, follow_redirects=False)
    assert r.status_code == 403
    csrf = sign_in(web, token(rt, "tenant_admin", "fabrikam"))
    r = web.post(f"/environments/{env_id}/restore", data={}, follow_redirects=False)
    assert r.status_code == 403
    with rt.transaction() as s:
        assert store.running_job_for(s, env_id) is None
    r = web.post(f"/environments/{env_id}/restore", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/job_")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    with rt.transaction() as s:
        job = store.find_job(s, job_id)
        assert (job.kind, job.environment_id, job.state) == ("restore", env_id, "pending")
    job_page = web.get(r.headers["location"]).text
    assert "Job: restore of fab-prod" in job_page


def test_after_the_window_the_page_says_so_and_restore_is_refused(
    web: TestClient, rt: Runtime, tmp_path: Path, clock: FixedClock
) -> None:
    env_id = _migrated(rt, tmp_path)
    clock.advance(days=29)
    csrf = sign_in(web, token(rt, "operator"))
    page = web.get(f"/environments/{env_id}").text
    assert "the window ended on" in page and f'action="/environments/{env_id}/restore"' not in page
    r = web.post(f"/environments/{env_id}/restore", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 409 and "restore window" in alert(r.text)
    assert environments.show_environment(rt, env_id)["encryption"]["mode"] == "cmk"
