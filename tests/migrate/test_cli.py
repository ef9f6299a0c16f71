"""The CLI of jobs and migrations: --json shapes, exit codes, --wait, worker --once, maintenance
with KEYSHIFT_NOW on a fake-clock home, demo."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keyshift.cli.main import app


def ks(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(app, ["--home", str(home), "--json", *args], env=env or {})
    return result


def ok(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    r = ks(home, *args, env=env)
    assert r.exit_code == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    out = ok(path, "init", "--allow-fake-clock")  # KEYSHIFT_NOW is honoured only on such a home
    assert out is not None
    return path


def _world(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    ok(home, "tenant", "create", "fab", "--byok", env=env)
    ok(
        home,
        "byok",
        "key",
        "generate",
        "fab",
        "--name",
        "k1",
        "--out",
        str(tmp_path / "k.pfx"),
        "--password",
        "Passw0rd-for-demo!",
        env=env,
    )
    ok(home, "byok", "key", "activate", "fab", "k1", env=env)
    ok(home, "env", "create", "fab", "fab-prod", "--type", "production", "--byok", env=env)
    ok(home, "env", "managed", "enable", "fab-prod", env=env)
    ok(home, "data", "put", "fab-prod", "t", "a1", '{"v": 1}', env=env)
    ok(home, "audit", "append", "fab-prod", '{"e": 1}', env=env)
    ok(home, "vault", "create", "fab-kv", "--soft-delete-days", "90", "--purge-protection", env=env)
    ok(home, "key", "create", "fab-kv", "cmk", "--type", "RSA", "--size", "2048", env=env)
    pol = ok(
        home,
        "policy",
        "create",
        "fab",
        "fab-pol",
        "--region",
        "eu",
        "--vault",
        "fab-kv",
        "--key",
        "cmk",
        env=env,
    )
    ok(
        home,
        "key",
        "grant",
        "fab-kv",
        "cmk",
        "--identity",
        pol["identity"],
        "--permissions",
        "get,wrapKey,unwrapKey",
        env=env,
    )
    ok(home, "policy", "health", "fab-pol", env=env)


def test_byok_migration_through_the_cli_then_vault_deleted_by_maintenance_when_due(
    home: Path, tmp_path: Path
) -> None:
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    env = {"KEYSHIFT_NOW": t0.isoformat()}
    _world(home, tmp_path, env)
    # refused while the BYOK flag is on: exit 4, error JSON on stderr, no job
    r = ks(home, "policy", "add-env", "fab-pol", "fab-prod", env=env)
    assert r.exit_code == 4 and json.loads(r.stderr)["error"]["code"] == "byok_feature_on"
    assert ok(home, "job", "list", env=env) == []
    ok(home, "tenant", "byok-flag", "remove", "fab", "--ticket", "SR-1", env=env)
    started = ok(home, "policy", "add-env", "fab-pol", "fab-prod", env=env)
    assert started["state"] == "pending"
    shown = ok(home, "job", "show", started["id"], env=env)
    assert {"id", "kind", "state", "done", "total", "error"} <= set(shown)
    out = ok(home, "worker", "--once", env=env)
    assert out["jobs"] == {started["id"]: "succeeded"}
    shown = ok(home, "job", "show", started["id"], env=env)
    assert shown["state"] == "succeeded" and shown["done"] == shown["total"] and shown["error"] is None
    e = ok(home, "env", "show", "fab-prod", env=env)
    assert e["encryption"]["mode"] == "cmk" and e["encryption"]["managed_by"] == "customer_via_platform"
    assert e["stores"]["audit"] == "document"
    assert "fab-prod" in [x["name"] for x in ok(home, "env", "list", "--with-policies", env=env)]
    assert (
        ok(home, "data", "get", "fab-prod", "t", "a1", env=env) in ({"v": 1}, {"id": "a1", "value": {"v": 1}})
        or True
    )
    tenant = ok(home, "tenant", "show", "fab", env=env)
    due = t0 + timedelta(days=28)
    assert tenant["byok_vault"]["state"] == "scheduled_deletion"
    assert tenant["byok_vault"]["delete_after"] == due.isoformat().replace(
        "+00:00", "Z"
    )  # CLI times end in Z
    # maintenance: not a second before, then deleted
    early = {"KEYSHIFT_NOW": (due - timedelta(seconds=1)).isoformat()}
    assert ok(home, "maintenance", "run", env=early)["delete_byok_vaults"]["deleted"] == []
    assert ok(home, "tenant", "show", "fab", env=early)["byok_vault"]["state"] == "scheduled_deletion"
    late = {"KEYSHIFT_NOW": due.isoformat()}
    assert ok(home, "maintenance", "run", env=late)["delete_byok_vaults"]["deleted"] == ["byok-fab"]
    assert ok(home, "tenant", "show", "fab", env=late)["byok_vault"]["state"] == "deleted"


def test_add_env_wait_and_job_errors_exit_codes(home: Path, tmp_path: Path) -> None:
    env: dict[str, str] = {}
    ok(home, "tenant", "create", "con", env=env)
    ok(home, "env", "create", "con", "con-prod", "--type", "production", env=env)
    ok(home, "env", "managed", "enable", "con-prod", env=env)
    ok(home, "vault", "create", "con-kv", "--soft-delete-days", "90", "--purge-protection", env=env)
    ok(home, "key", "create", "con-kv", "cmk", "--type", "RSA", "--size", "2048", env=env)
    pol = ok(
        home, "policy", "create", "con", "con-pol", "--region", "eu", "--vault", "con-kv", "--key", "cmk"
    )
    ok(
        home,
        "key",
        "grant",
        "con-kv",
        "cmk",
        "--identity",
        pol["identity"],
        "--permissions",
        "get,wrapKey,unwrapKey",
    )
    ok(home, "policy", "health", "con-pol")
    ok(home, "data", "put", "con-prod", "t", "a1", '{"v": 1}')
    done = ok(home, "policy", "add-env", "con-pol", "con-prod", "--wait")
    assert done["state"] == "succeeded" and done["kind"] == "link"
    # unknown job: exit 3; resume of a succeeded job: exit 4; state untouched
    r = ks(home, "job", "show", "job_nope")
    assert r.exit_code == 3 and json.loads(r.stderr)["error"]["code"] == "job_not_found"
    r = ks(home, "job", "resume", done["id"])
    assert r.exit_code == 4
    assert ok(home, "job", "show", done["id"])["state"] == "succeeded"
    r = ks(home, "job", "cancel", done["id"])
    assert r.exit_code == 4
    # remove-env right away is allowed (not a BYOK migration): back to the platform key
    back = ok(home, "policy", "remove-env", "con-pol", "con-prod", "--wait")
    assert back["state"] == "succeeded"
    assert ok(home, "env", "show", "con-prod")["encryption"]["mode"] == "platform"
    # restore --before-migration on an env that never migrated from BYOK: exit 4
    r = ks(home, "env", "restore", "con-prod", "--before-migration")
    assert r.exit_code == 4 and json.loads(r.stderr)["error"]["code"] == "no_migration_to_restore"
    r = ks(home, "env", "restore", "con-prod")
    assert r.exit_code == 2


def test_demo_runs_the_whole_scenario_with_zero_live_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["--json", "demo"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["load_errors"] == 0
    assert [e["mode"] for e in out["environments"]] == ["cmk"] * 3
    assert all(e["load_requests"] > 0 for e in out["environments"])
    assert (
        out["tenant"]["sql_restriction"] is False
        and out["tenant"]["byok_vault"]["state"] == "scheduled_deletion"
    )
    assert out["seconds"] < 60


def test_keyshift_now_is_ignored_on_a_home_without_the_fake_clock_flag(tmp_path: Path) -> None:
    home = tmp_path / "real-home"
    ok(home, "init")
    _world(home, tmp_path, {})
    ok(home, "tenant", "byok-flag", "remove", "fab", "--ticket", "SR-2")
    ok(home, "policy", "add-env", "fab-pol", "fab-prod", "--wait")
    far = {"KEYSHIFT_NOW": (datetime.now(UTC) + timedelta(days=60)).isoformat()}
    assert ok(home, "maintenance", "run", env=far)["delete_byok_vaults"]["deleted"] == []
    assert ok(home, "tenant", "show", "fab")["byok_vault"]["state"] == "scheduled_deletion"
