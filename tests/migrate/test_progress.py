"""Job progress: items per second of the running batched phase and the time left, in the job view,
`keyshift job show`, the admin center job page and its progress endpoint."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from keyshift.cli.main import app
from keyshift.db.models import Job
from keyshift.jobs import store
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore

from .helpers import customer_key, job, make_env, make_policy, make_tenant, run


def _linked_world(rt: Runtime, rows: int = 120) -> str:
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "prod")
    vault, key = customer_key(rt)
    make_policy(rt, "contoso", "pol1", vault, key)
    RecordStore(rt, env_id).put_many("t", [(f"r{i:04d}", {"n": i}) for i in range(rows)])
    return env_id


def _as_running_reencrypt(rt: Runtime, job_id: str, *, done: int, total: int, seconds_ago: float) -> None:
    """Put the job where a worker would be: in its re-encryption phase, `done` rows in."""
    with rt.transaction() as s:
        j = store.find_job(s, job_id)
        cp = store.rate_mark({**j.checkpoint, "phase_name": "reencrypt"}, "reencrypt", 0)
        cp["rate_since"] = time.time() - seconds_ago
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state="running", items_done=done, items_total=total, checkpoint=cp)
        )


def test_a_running_job_reports_its_rate_and_time_left(rt: Runtime) -> None:
    _linked_world(rt)
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    assert view["rate"] is None and view["eta_seconds"] is None  # pending: nothing to measure
    _as_running_reencrypt(rt, view["id"], done=10_000, total=50_000, seconds_ago=100.0)
    got = job(rt, view["id"])
    assert got["rate_unit"] == "rows"
    assert 90 < got["rate"] <= 100  # 10,000 rows in a little over 100 s
    assert 400 <= got["eta_seconds"] < 445  # 40,000 rows left at that rate


def test_rates_are_measured_while_a_real_job_runs_and_vanish_when_it_ends(rt: Runtime) -> None:
    _linked_world(rt, rows=200)
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    with rt.transaction() as s:
        j = store.find_job(s, view["id"])
        j.params = {**j.params, "row_batch": 10}
    seen: list[dict[str, Any]] = []
    assert run(rt, view["id"], on_progress=seen.append) == "succeeded"
    during = [v for v in seen if v["phase"] == "reencrypt" and v["state"] == "running"]
    assert during and all(v["rate_unit"] == "rows" for v in during)
    measured = [v for v in during if v["rate"]]
    assert measured and all(v["rate"] > 0 and v["eta_seconds"] >= 0 for v in measured)
    final = job(rt, view["id"])
    assert final["state"] == "succeeded" and final["rate"] is None and final["eta_seconds"] is None


def test_resume_restarts_the_rate_measurement(rt: Runtime) -> None:
    _linked_world(rt)
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    _as_running_reencrypt(rt, view["id"], done=100, total=5000, seconds_ago=3600.0)
    with rt.transaction() as s:
        store.mark_failed(s, view["id"], "vault_unavailable", "down", rt.clock.now())
    store.resume(rt, view["id"])
    with rt.transaction() as s:
        cp = store.find_job(s, view["id"]).checkpoint
    assert cp["rate_base"] == 100 and time.time() - cp["rate_since"] < 60


def test_job_show_prints_rows_per_second_and_eta(rt: Runtime, home: Path, db_url: str | None) -> None:
    _linked_world(rt)
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    _as_running_reencrypt(rt, view["id"], done=20_000, total=100_000, seconds_ago=200.0)
    args = ["--home", str(home)] + (["--database-url", db_url] if db_url else [])
    out = CliRunner().invoke(app, [*args, "job", "show", view["id"]])
    assert out.exit_code == 0, out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("progress:"))
    assert re.search(r"20,000 of 100,000, (9\d|100) rows/s, ETA 0:1[34]:\d\d", line), line


def test_the_job_page_and_its_progress_endpoint_show_the_rate(sqlite_rt: Runtime) -> None:
    from keyshift.api.app import create_app
    from keyshift.control import tokens

    rt = sqlite_rt
    _linked_world(rt)
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    _as_running_reencrypt(rt, view["id"], done=50_000, total=100_000, seconds_ago=500.0)
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        form = client.get("/login").text
        csrf = re.search(r'name="login_csrf" value="([^"]+)"', form)
        assert csrf
        token = tokens.create_token(rt, "operator")["token"]
        client.post("/login", data={"token": token, "login_csrf": csrf.group(1)}, follow_redirects=False)
        data = client.get(f"/jobs/{view['id']}/progress").json()
        assert data["rate_unit"] == "rows" and 90 < data["rate"] <= 100 and data["eta_seconds"] > 0
        page = client.get(f"/jobs/{view['id']}").text
        assert re.search(r'id="job-rate"[^>]*>\s*\d+ rows/s, about \d+ s left', page), page
