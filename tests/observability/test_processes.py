"""The real processes: `keyshift serve --log-format json` under Uvicorn on a free port (access
lines, /metrics scraped over HTTP), and `keyshift worker --metrics-port N --log-format json` driving
a job (its metrics port scraped, its job lines read)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyshift.control import environments, tokens
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from revocation.helpers import cmk_world, put_rows

from .support import parse, value

MAIN = "from keyshift.cli.main import main; main()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {log.read_text()[-2000:]}")


def _json_lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_serve_logs_json_access_lines_and_serves_metrics_over_http(
    sqlite_rt: Runtime, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rt = sqlite_rt
    home = rt.home.path
    op = str(tokens.create_token(rt, "operator")["token"])
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                MAIN,
                "--home",
                str(home),
                "serve",
                "--port",
                str(port),
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started.append(proc)
    base = f"http://127.0.0.1:{port}"
    _wait_http(f"{base}/healthz", proc, log)
    auth = {"Authorization": f"Bearer {op}"}
    assert httpx.get(f"{base}/readyz").status_code == 200
    r = httpx.post(
        f"{base}/api/v1/tenants", json={"name": "contoso"}, headers={**auth, "X-Request-ID": "it-1"}
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == "it-1"
    scraped = httpx.get(f"{base}/metrics", headers=auth)
    assert scraped.status_code == 200
    samples = parse(scraped.text)
    assert (
        value(samples, "keyshift_http_requests_total", method="POST", route="/api/v1/tenants", status="201")
        == 1
    )
    assert value(samples, "keyshift_state_up") == 1
    time.sleep(0.3)  # the access line of the scrape itself is written after its response
    lines = _json_lines(log)
    access = [ln for ln in lines if ln["logger"] == "keyshift.access"]
    routes = [(ln["method"], ln["route"], ln["status"]) for ln in access]
    assert ("POST", "/api/v1/tenants", 201) in routes and ("GET", "/healthz", 200) in routes
    (post,) = [ln for ln in access if ln["route"] == "/api/v1/tenants"]
    assert (
        post["request_id"] == "it-1" and post["principal"].startswith("token:tok_") and post["latency_ms"] > 0
    )
    assert any(ln["logger"] == "uvicorn.error" for ln in lines)  # Uvicorn's own lines are JSON too
    assert op.split(".")[1] not in log.read_text()


def test_worker_metrics_port_and_json_job_lines(
    sqlite_rt: Runtime, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rt = sqlite_rt
    world = cmk_world(rt, rows=0)
    view = environments.create_environment(rt, "contoso", "contoso-uat", env_type="sandbox")
    environments.set_managed(rt, "contoso-uat", True)
    put_rows(rt, view["id"], 30)
    job = start_link(rt, world.policy, "contoso-uat")
    port = _free_port()
    log = tmp_path / "worker.log"
    argv = ["--home", str(rt.home.path), "worker", "--metrics-port", str(port), "--log-format", "json"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, *argv, "--idle-seconds", "0.1", "--heartbeat-seconds", "0.2"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started.append(proc)
    url = f"http://127.0.0.1:{port}/metrics"
    _wait_http(url, proc, log)
    deadline = time.monotonic() + 60
    while True:
        samples = parse(httpx.get(url).text)
        finished = value(samples, "keyshift_jobs_finished_total", kind="link", state="succeeded") == 1
        # the job can end before the first heartbeat is due; the idle worker keeps beating
        if finished and value(samples, "keyshift_worker_heartbeats_total") >= 1:
            break
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    with rt.transaction() as s:
        from keyshift.jobs.store import find_job

        done = find_job(s, job["id"]).items_done
    assert done > 0
    assert value(samples, "keyshift_job_items_processed_total", kind="link") == done
    assert value(samples, "keyshift_vault_calls_total", kind="local", operation="wrap", outcome="ok") >= 1
    assert value(samples, "keyshift_worker_heartbeats_total") >= 1
    assert "keyshift_environments{" not in httpx.get(url).text  # database state is the API's to report
    lines = [ln for ln in _json_lines(log) if ln.get("job") == job["id"]]
    events = [ln["event"] for ln in lines]
    assert events[0] == "job.started" and events[-1] == "job.succeeded", events
    assert "job.phase" in events
    assert all(ln["environment"] == view["id"] and ln["kind"] == "link" for ln in lines)
