"""Structured logs: JSON lines or readable text; access lines, job lines, revocation and re-enable
lines with their fields; and over the whole demo plus API traffic, no plaintext value, no key
material and no token in any line."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import environments, tokens, vaults
from keyshift.control.monitor import monitor_once
from keyshift.control.revocation import reenable_environment
from keyshift.crypto.cache import DekCache
from keyshift.crypto.dek import DataKey
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link
from keyshift.observability import logs
from keyshift.observability.job_reports import JobReporter
from keyshift.runtime import Runtime
from keyshift.vaults.master_key import MASTER_KEY_FILE
from revocation.helpers import KEY, VAULT, cmk_world, put_rows

CANARY = "PLAINTEXT-canary-6d0f"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure("json", level="DEBUG", stream=buf)
    try:
        yield buf
    finally:
        logs.reset()


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def _encodings(raw: bytes) -> list[str]:
    return [
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


def test_json_and_text_lines_carry_the_structured_fields() -> None:
    record = logging.LogRecord("keyshift.jobs", logging.INFO, __file__, 1, "job phase", None, None)
    record.job, record.phase, record.done = "job_1", "rewrap", 3
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["msg"] == "job phase" and line["level"] == "info" and line["logger"] == "keyshift.jobs"
    assert (line["job"], line["phase"], line["done"]) == ("job_1", "rewrap", 3)
    assert line["ts"].endswith("Z")
    text = logs.TextFormatter().format(record)
    assert "INFO" in text and "job phase" in text and "job=job_1" in text and "phase=rewrap" in text


def test_a_token_shaped_string_is_masked_by_the_formatter() -> None:
    secret = "tok_0123456789abcdef0123." + "A" * 43
    record = logging.LogRecord("keyshift.api", logging.ERROR, __file__, 1, "saw %s", (secret,), None)
    for fmt in (logs.JsonFormatter(), logs.TextFormatter()):
        out = fmt.format(record)
        assert "A" * 43 not in out and "tok_0123456789abcdef0123.<redacted>" in out


def test_unknown_log_format_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.configure("xml")


def test_job_reporter_logs_start_phases_and_end_and_counts_items(captured: io.StringIO) -> None:
    from keyshift.observability.exposition import render

    from .support import parse, value

    def items() -> float:
        return value(parse(render().decode()), "keyshift_job_items_processed_total", kind="toykind")

    before = items()
    current: list[str | None] = []
    clock = iter([0.0, 0.5, 1.0, 20.0, 21.0])
    rep = JobReporter(progress_seconds=10, on_current=current.append, monotonic=lambda: next(clock))
    base = {"id": "job_x", "kind": "toykind", "environment": "env_1", "total": 10, "error": None}
    rep({**base, "state": "running", "phase": "prepare", "done": 0})
    rep({**base, "state": "running", "phase": "rewrap", "done": 4})
    rep({**base, "state": "running", "phase": "rewrap", "done": 6})  # < 10 s since the last line
    rep({**base, "state": "running", "phase": "rewrap", "done": 9})  # 10 s later: a progress line
    rep(
        {
            **base,
            "state": "failed",
            "phase": "rewrap",
            "done": 9,
            "error": {"code": "access_denied", "message": "m"},
        }
    )
    events = [(ln["event"], ln.get("phase"), ln.get("done")) for ln in _lines(captured)]
    assert events == [
        ("job.started", "prepare", 0),
        ("job.phase", "prepare", 0),
        ("job.phase", "rewrap", 4),
        ("job.progress", "rewrap", 9),
        ("job.failed", "rewrap", 9),
    ]
    failed = _lines(captured)[-1]
    assert (
        failed["level"] == "error" and failed["error_code"] == "access_denied" and failed.get("error") != "m"
    )
    assert all(ln["job"] == "job_x" and ln["environment"] == "env_1" for ln in _lines(captured))
    assert items() - before == 9
    assert current == ["job_x", None]


def test_no_secret_in_any_log_line_over_the_demo_and_api_traffic(
    captured: io.StringIO, tmp_path: Path, sqlite_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys: list[bytes] = []
    real_put = DekCache.put

    def spy(self: DekCache, scope: str, key: DataKey) -> None:
        keys.append(key.key)
        real_put(self, scope, key)

    monkeypatch.setattr(DekCache, "put", spy)

    # 1. The whole demo scenario (BYOK tenant, three environments migrated online under load).
    from keyshift.demo import DEMO_PFX_PASSWORD, run_demo

    demo_home = tmp_path / "demo"
    demo_home.mkdir()
    out = run_demo(demo_home, say=lambda _m: None)
    assert out["load_errors"] == 0
    master = (demo_home / MASTER_KEY_FILE).read_bytes()

    # 2. API traffic, a worker job with its reporter, a revocation and a re-enable.
    rt = sqlite_rt
    world = cmk_world(rt, rows=3)
    eid = world.envs["contoso-prod"]
    op = tokens.create_token(rt, "operator")["token"]
    svc = tokens.create_token(rt, "service", tenant="contoso", envs=[eid])["token"]
    auth = {"Authorization": f"Bearer {svc}"}
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        assert (
            c.put(
                f"/api/v1/environments/{eid}/records/t/c1", headers=auth, json={"value": CANARY}
            ).status_code
            == 200
        )
        assert c.get(f"/api/v1/environments/{eid}/records/t/c1", headers=auth).json()["value"] == CANARY
        files = c.put(
            f"/api/v1/environments/{eid}/files/secret/{CANARY}.txt", headers=auth, content=CANARY.encode()
        )
        assert files.status_code < 300, files.text
        assert c.get("/api/v1/tenants", headers={"Authorization": f"Bearer {svc}x"}).status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Bearer {op}"}).status_code == 200
        requests = 5
    view = environments.create_environment(rt, "contoso", "contoso-uat", env_type="sandbox")
    environments.set_managed(rt, "contoso-uat", True)
    put_rows(rt, view["id"], 5)
    job = start_link(rt, world.policy, "contoso-uat")
    assert Worker(rt, poll_seconds=0.01, on_progress=JobReporter()).run_job(job["id"]) == "succeeded"
    vaults.revoke_key_grant(rt, VAULT, KEY, world.identity, force=True)  # a customer revoking a covered key
    assert sorted(monitor_once(rt)[world.policy]["environments_disabled"]) == sorted([eid, view["id"]])
    vaults.grant_key(rt, VAULT, KEY, world.identity, "get,wrapKey,unwrapKey")
    reenable_environment(rt, eid)

    text = captured.getvalue()
    lines = _lines(captured)
    # What an operator needs is there ...
    access = [ln for ln in lines if ln["logger"] == "keyshift.access"]
    assert len(access) == requests
    assert all({"request_id", "principal", "route", "status", "latency_ms"} <= set(ln) for ln in access)
    assert {ln["route"] for ln in access} >= {"/api/v1/environments/{env}/records/{table}/{record_id}"}
    jobs = [ln for ln in lines if ln["logger"] == "keyshift.jobs" and ln.get("job") == job["id"]]
    assert jobs[0]["event"] == "job.started" and jobs[-1]["event"] == "job.succeeded"
    assert all(ln["environment"] == view["id"] and "phase" in ln for ln in jobs)
    disabled = [ln for ln in lines if ln.get("event") == "environment.disabled"]
    assert sorted(ln["environment"] for ln in disabled) == sorted([eid, view["id"]])
    for ln in disabled:
        assert ln["policy"] == world.policy, json.dumps(ln)
        assert world.identity in ln["evidence"] and "lacks" in ln["evidence"], json.dumps(ln)
    (enabled,) = [ln for ln in lines if ln.get("event") == "environment.re_enabled"]
    assert enabled["environment"] == eid and enabled["policy"] == world.policy
    assert enabled["key"] == f"{VAULT}/{KEY}" and enabled["deks_checked"] >= 1 and enabled["evidence"]
    # ... and no secret is.
    assert len(keys) >= 4 and len(master) == 32
    secrets_ = [CANARY, op, svc, op.split(".")[1], svc.split(".")[1], DEMO_PFX_PASSWORD]
    secrets_ += [enc for raw in [*keys, master] for enc in _encodings(raw)]
    plaintext = ["order.create", "order.update", "live upload", '"customer"', "invoices/"]
    leaked = [s for s in [*secrets_, *plaintext] if s in text]
    assert not leaked, f"log lines hold {len(leaked)} secret(s)/plaintext(s)"


@pytest.mark.parametrize("command", [["serve"], ["worker", "--once"]])
def test_an_unknown_log_format_on_the_command_line_is_a_usage_error(
    command: list[str], sqlite_rt: Runtime
) -> None:
    from typer.testing import CliRunner

    from keyshift.cli.main import app

    def workers() -> int:
        with sqlite_rt.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM worker_heartbeats").scalar_one())

    result = CliRunner().invoke(app, ["--home", str(sqlite_rt.home.path), *command, "--log-format", "xml"])
    assert result.exit_code == 2
    assert "log-format" in result.output
    assert workers() == 0  # refused before anything started
