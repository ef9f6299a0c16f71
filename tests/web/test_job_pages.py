"""Job pages (TestClient, SQLite and PostgreSQL): a failed job says it can be resumed and offers
Resume and Cancel to the roles that may use them; the bar reads by phase and is never full while the
job still runs; the list shows names, the environment and the error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jobs import toy  # noqa: F401 - registers the "toy" plan
from keyshift.control import environments, tenants
from keyshift.db.models import AdminAuditEvent
from keyshift.jobs import store
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

from .webclient import alert, client_for, csrf_of, sign_in, token


@pytest.fixture
def web(rt: Runtime) -> Iterator[TestClient]:
    yield from client_for(rt)


def _world(rt: Runtime, tmp_path: Path) -> dict[str, Any]:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    env = environments.create_environment(rt, a["id"], "alpha-prod")
    benv = environments.create_environment(rt, b["id"], "beta-prod")
    flag = tmp_path / "vault-down"
    flag.write_text("1")
    ids = {}
    for name, e, t in (("alpha", env, a), ("beta", benv, b)):
        with rt.transaction() as s:
            job = store.create_job(
                rt,
                s,
                "toy",
                environment_id=e["id"],
                tenant_id=t["id"],
                params={"items": 9, "batch": 3, "fail_at": 4, "fail_flag": str(flag)},
            )
            ids[name] = job.id
        assert Worker(rt).run_job(ids[name]) == "failed"
    return {"job": ids["alpha"], "beta_job": ids["beta"], "env": env, "flag": flag}


def _state(rt: Runtime, job_id: str) -> str:
    with rt.transaction() as s:
        return store.find_job(s, job_id).state


def test_failed_job_says_it_can_be_resumed_and_resume_works(
    web: TestClient, rt: Runtime, tmp_path: Path
) -> None:
    w = _world(rt, tmp_path)
    csrf = sign_in(web, token(rt, "tenant_admin", "alpha"))
    page = web.get(f"/jobs/{w['job']}").text
    assert "The job failed and can be resumed" in page
    assert re.search(r'<p id="job-done"[^>]*hidden', page), "a failed job must not read as ended"
    assert f'action="/jobs/{w["job"]}/resume"' in page and f'action="/jobs/{w["job"]}/cancel"' in page
    assert "Job: toy of alpha-prod" in page  # names, not ids, in the heading
    # The list: environment name, the error, "can be resumed"; nothing of beta.
    listing = web.get("/jobs").text
    assert "alpha-prod" in listing and "vault_unavailable" in listing and "can be resumed" in listing
    assert w["beta_job"] not in listing and "beta-prod" not in listing
    # Missing CSRF: the documented 403, nothing resumed.
    r = web.post(f"/jobs/{w['job']}/resume", data={}, follow_redirects=False)
    assert r.status_code == 403 and "did not come from this site" in alert(r.text)
    assert _state(rt, w["job"]) == "failed"
    # Another tenant's job: like a missing one.
    r = web.post(f"/jobs/{w['beta_job']}/resume", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 404 and w["beta_job"] in alert(r.text)  # it echoes the id it was given
    assert _state(rt, w["beta_job"]) == "failed"
    w["flag"].unlink()
    r = web.post(f"/jobs/{w['job']}/resume", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{w['job']}"
    assert _state(rt, w["job"]) == "running"
    with rt.transaction() as s:
        stmt = select(AdminAuditEvent.principal).where(AdminAuditEvent.action == "job.resume")
        actions = list(s.scalars(stmt))
    assert len(actions) == 1 and actions[0].endswith(":tenant_admin")
    # Resuming it again is refused with the reason; state unchanged.
    r = web.post(f"/jobs/{w['job']}/resume", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 409 and "only a failed job can be resumed" in alert(r.text)
    assert _state(rt, w["job"]) == "running"


def test_cancel_from_the_page_and_readers_get_no_buttons(
    web: TestClient, rt: Runtime, tmp_path: Path
) -> None:
    w = _world(rt, tmp_path)
    sign_in(web, token(rt, "reader", "alpha"))
    page = web.get(f"/jobs/{w['job']}").text
    assert "can be resumed" in page and "/resume" not in page and "/cancel" not in page
    r = web.post(f"/jobs/{w['job']}/cancel", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 403 and "may not change" in alert(r.text)
    assert _state(rt, w["job"]) == "failed"
    csrf = sign_in(web, token(rt, "operator"))
    r = web.post(f"/jobs/{w['job']}/cancel", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert _state(rt, w["job"]) == "cancelled"
    page = web.get(f"/jobs/{w['job']}").text
    assert "The job has ended" in page and "/resume" not in page and "/cancel" not in page


def test_progress_reads_by_phase_and_is_not_full_while_running(web: TestClient, rt: Runtime) -> None:
    t = tenants.create_tenant(rt, "alpha")
    env = environments.create_environment(rt, t["id"], "alpha-prod")
    with rt.transaction() as s:
        job_id = store.create_job(
            rt, s, "toy", environment_id=env["id"], tenant_id=t["id"], params={"items": 4, "batch": 2}
        ).id
    worker = Worker(rt)
    sign_in(web, token(rt, "operator"))
    seen = []
    while True:
        worker.step(job_id)
        p = web.get(f"/jobs/{job_id}/progress").json()
        seen.append(p)
        if p["state"] == "succeeded":
            break
        assert p["fraction"] < 1, p
        assert len(seen) < 50
    # After the first batched phase all planned items are done (done == total) while the serial
    # cutover and the tail phase are still ahead: the old bar read full here.
    at_cutover = [p for p in seen if p["state"] == "running" and p["phase_number"] == 2]
    assert at_cutover and all(p["done"] == p["total"] for p in at_cutover)
    assert all(p["fraction"] < 0.7 for p in at_cutover)
    assert seen[-1]["fraction"] == 1 and seen[-1]["phase_count"] == 3
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions)  # never goes back
    page = web.get(f"/jobs/{job_id}").text
    assert 'value="1000"' in page and "Phase 3 of 3" in page
