"""CLI: `tenant ...` and `env ...` — JSON output, error JSON on stderr, exit codes, state unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_support import Cli, snapshot

from keyshift.runtime import Runtime


@pytest.fixture
def cli(rt: Runtime, home: Path, db_url: str | None) -> Cli:
    return Cli(rt, home, db_url)


def test_tenant_create_list_show_and_flag_removal(cli: Cli, tmp_path: Path) -> None:
    t = cli("tenant", "create", "fab", "--byok")
    assert t["byok_feature"] is True and t["byok_vault"]["name"] == "byok-fab"
    assert [r["name"] for r in cli("tenant", "list")] == ["fab"]
    shown = cli("tenant", "show", "fab")
    for field in ("byok_feature", "sql_restriction", "byok_vault", "final_byok_migration_at"):
        assert field in shown
    assert {"state", "delete_after"} <= set(shown["byok_vault"])
    pw = "correct horse battery 7"
    cli("byok", "key", "generate", "fab", "--name", "k1", "--out", str(tmp_path / "k1.pfx"), "--password", pw)
    cli("byok", "key", "activate", "fab", "k1")
    cli("env", "create", "fab", "fab-env", "--byok")
    after = cli("tenant", "byok-flag", "remove", t["id"], "--ticket", "OPS-7")
    # a BYOK environment is left: the restriction stays until it leaves BYOK
    assert after["byok_feature"] is False and after["sql_restriction"] is True


TENANT_ERRORS = (
    (("tenant", "create", "t"), "tenant_exists", 4),
    (("tenant", "create", "bad/name"), "invalid_name", 2),
    (("tenant", "show", "ghost"), "tenant_not_found", 3),
    (("tenant", "byok-flag", "remove", "t", "--ticket", "X-1"), "byok_feature_off", 4),
)


def test_tenant_errors(cli: Cli) -> None:
    cli("tenant", "create", "t")
    before = snapshot(cli.rt)
    for args, code, exit_code in TENANT_ERRORS:
        err = cli(*args, code=exit_code)
        assert err["code"] == code and err["message"]
        assert snapshot(cli.rt) == before


def test_env_create_show_list_managed_feature(cli: Cli) -> None:
    cli("tenant", "create", "contoso")
    e = cli("env", "create", "contoso", "contoso-prod", "--region", "us", "--type", "production")
    assert e["encryption"]["mode"] == "platform" and e["type"] == "production"
    shown = cli("env", "show", "contoso-prod")
    assert {
        "id",
        "name",
        "tenant",
        "region",
        "type",
        "managed",
        "state",
        "sql_restriction",
        "features",
        "stores",
        "encryption",
    } <= set(shown)
    assert cli("env", "managed", "enable", "contoso-prod")["managed"] is True
    assert cli("env", "feature", "enable", e["id"], "search")["features"] == ["search"]
    assert [r["name"] for r in cli("env", "list", "--tenant", "contoso")] == ["contoso-prod"]
    assert cli("env", "list", "--with-policies") == []


ENV_ERRORS = (
    (("env", "create", "t", "e1"), "environment_exists", 4),
    (("env", "create", "ghost", "e2"), "tenant_not_found", 3),
    (("env", "create", "t", "e2", "--region", "moon"), "invalid_region", 2),
    (("env", "create", "t", "e2", "--type", "staging"), "invalid_type", 2),
    (("env", "show", "ghost"), "environment_not_found", 3),
    (("env", "managed", "enable", "ghost"), "environment_not_found", 3),
    (("env", "feature", "enable", "e1", "nope"), "invalid_feature", 2),
    (("env", "feature", "enable", "b1", "data-lake"), "sql_restriction", 4),
)


def test_env_errors(cli: Cli) -> None:
    cli("tenant", "create", "t")
    cli("tenant", "create", "b", "--byok")
    cli("env", "create", "t", "e1")
    cli("env", "create", "b", "b1")
    before = snapshot(cli.rt)
    for args, code, exit_code in ENV_ERRORS:
        err = cli(*args, code=exit_code)
        assert err["code"] == code
        assert snapshot(cli.rt) == before


def test_human_env_show_renders_customer_via_platform(cli: Cli) -> None:
    cli("tenant", "create", "t")
    cli("env", "create", "t", "e1")
    from keyshift.db.models import Environment

    with cli.rt.transaction() as s:
        env = s.query(Environment).filter_by(name="e1").one()
        env.enc_mode, env.enc_managed_by = "cmk", "customer_via_platform"
    assert f"CustomerVia{cli.rt.settings.platform_name}" in cli.human("env", "show", "e1")
