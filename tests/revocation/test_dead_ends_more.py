"""More ways out: `tenant byok-flag add`, `tenant show` after the BYOK vault was deleted, and the
30-day old-key warning of `policy remove-env` in its --wait form. CLI, fake clock, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from keyshift.control import byok, environments, tenants

from .helpers import KEY, VAULT, Cli, audit_actions, cmk_world, snapshot

PW = "correct horse battery staple 1"


def _byok_tenant(rt: Any, tmp_path: Any) -> None:
    tenants.create_tenant(rt, "fab", byok=True)
    byok.generate(rt, "fab", "k1", out=tmp_path / "k1.pfx", password=PW)
    byok.activate(rt, "fab", "k1")
    environments.create_environment(rt, "fab", "fab-prod", env_type="sandbox", byok=True)
    environments.create_environment(rt, "fab", "fab-plain", env_type="sandbox")


def test_byok_flag_add_turns_the_feature_back_on(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    _byok_tenant(rt, tmp_path)
    tenants.create_tenant(rt, "plain")
    cli = Cli(home, db_url, clock)
    cli("tenant", "byok-flag", "remove", "fab", "--ticket", "OPS-1")
    assert cli("byok", "apply", "fab-plain", code=4)["code"] == "byok_feature_off"
    state0 = snapshot(rt)
    cases = [
        (("tenant", "byok-flag", "add", "fab", "--ticket", " "), 2, "ticket_required"),
        (("tenant", "byok-flag", "add", "nobody", "--ticket", "OPS-2"), 3, "tenant_not_found"),
        (("tenant", "byok-flag", "add", "plain", "--ticket", "OPS-2"), 4, "not_byok_tenant"),
    ]
    for args, code, err_code in cases:
        assert cli(*args, code=code)["code"] == err_code, args
    assert snapshot(rt) == state0
    from keyshift.jobs import store

    with rt.transaction() as s:  # a migration to a customer-managed key in progress
        tid = tenants.show_tenant(rt, "fab")["id"]
        link = store.create_job(rt, s, "link", environment_id=None, tenant_id=tid, params={"from_byok": True})
        link_id = link.id
    err = cli("tenant", "byok-flag", "add", "fab", "--ticket", "OPS-2", code=4)
    assert err["code"] == "migration_running" and link_id in err["message"]
    store.request_cancel(rt, link_id)
    out = cli("tenant", "byok-flag", "add", "fab", "--ticket", "OPS-2")
    assert out["byok_feature"] is True and out["sql_restriction"] is True
    assert out["byok_flag_ticket"] is None
    added = [(o, r) for a, o, r in audit_actions(rt, out["id"]) if a == "tenant.byok_flag.add"]
    assert added[-1][0] == "ok"
    assert cli("tenant", "byok-flag", "add", "fab", "--ticket", "OPS-3", code=4)["code"] == "byok_feature_on"
    assert cli("byok", "apply", "fab-plain")["encryption"]["mode"] == "byok"  # BYOK works again

    # Once finalized, turning BYOK back on would contradict the lifted restriction: refused.
    cli("tenant", "byok-flag", "remove", "fab", "--ticket", "OPS-4")
    cli("byok", "revert", "fab-prod")
    assert cli("byok", "revert", "fab-plain")["tenant_finalized"] is True
    state1 = snapshot(rt)
    err = cli("tenant", "byok-flag", "add", "fab", "--ticket", "OPS-5", code=4)
    assert err["code"] == "tenant_finalized" and "--before-migration" in err["message"]
    assert snapshot(rt) == state1


def test_tenant_show_after_the_byok_vault_was_deleted(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    _byok_tenant(rt, tmp_path)
    cli = Cli(home, db_url, clock)
    cli("tenant", "byok-flag", "remove", "fab", "--ticket", "OPS-1")
    cli("byok", "revert", "fab-prod")
    shown = cli("tenant", "show", "fab")
    assert shown["byok_vault"]["state"] == "scheduled_deletion"
    assert [k["state"] for k in shown["byok_keys"]] == ["active"]  # still usable until deleted
    clock.advance(days=28)
    assert cli("maintenance", "run")["delete_byok_vaults"]["deleted"] == ["byok-fab"]
    shown = cli("tenant", "show", "fab")
    assert shown["byok_vault"]["state"] == "deleted"
    assert shown["byok_keys"] == []  # no key shown as active in a deleted vault
    assert cli("byok", "key", "list", "fab") == []
    # A key row left `active` by an older version: still not shown as usable.
    from sqlalchemy import update

    from keyshift.db.models import ByokKey

    with rt.transaction() as s:
        s.execute(update(ByokKey).values(state="active"))
    assert cli("tenant", "show", "fab")["byok_keys"] == []
    assert cli("byok", "key", "list", "fab") == []


def test_remove_env_wait_keeps_the_old_key_warning(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from keyshift.cli.main import app

    world = cmk_world(rt)
    cli = Cli(home, db_url, clock)
    cli("key", "update", VAULT, KEY, "--expires", (clock.now() + timedelta(days=20)).isoformat())
    base = ["--home", str(home), "--json"] + (["--database-url", db_url] if db_url else [])
    env = {"KEYSHIFT_NOW": clock.now().isoformat()}
    res = CliRunner().invoke(
        app, [*base, "policy", "remove-env", world.policy, "contoso-prod", "--wait"], env=env
    )
    assert res.exit_code == 0, (res.stdout, res.stderr)
    view = json.loads(res.stdout)
    assert view["state"] == "succeeded" and view["kind"] == "unlink"
    assert view["warnings"] and "within 30 days" in view["warnings"][0]
    assert "warning: the old key expires" in res.stderr


def test_env_delete_of_a_linked_environment_frees_its_policy(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    world = cmk_world(rt)
    cli = Cli(home, db_url, clock)
    assert cli("policy", "delete", world.policy, code=4)["code"] == "policy_in_use"
    out = cli("env", "delete", "contoso-prod", "--confirm", "contoso-prod")
    assert out["state"] == "deleted" and out["previous"]["mode"] == "cmk"
    assert cli("data", "get", "contoso-prod", "t", "r00001", code=3)["code"] == "environment_deleted"
    assert cli("policy", "delete", world.policy)["state"] == "deleted"
