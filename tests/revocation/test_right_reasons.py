"""Link-time and CLI behaviour of "fail closed for the right reasons": `policy add-env` checks the
policy's key for real (a grant removed since the last check refuses the link instead of linking an
environment that the first write then disables; a policy never checked is simply checked),
`policy health` exits 4 when the policy is not healthy (JSON still printed), `policy monitor`
names its fields so a healthy key reads `key_usable: true`, and the evidence of a disable is in the
admin audit trail, `env show`, the API and the admin center."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from keyshift.cli.main import app
from keyshift.control import environments, tenants, vaults
from keyshift.control.monitor import monitor_once
from keyshift.control.policies import create_policy
from keyshift.db.models import AdminAuditEvent, Policy
from keyshift.errors import ConflictError
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link

from .helpers import KEY, VAULT, cmk_world, env_row, put_rows, snapshot


def _linkable(rt, name="contoso-dev"):  # type: ignore[no-untyped-def]
    view = environments.create_environment(rt, "contoso", name, env_type="developer")
    environments.set_managed(rt, name, True)
    return view["id"]


def test_add_env_checks_a_never_checked_policy_instead_of_refusing(rt) -> None:  # type: ignore[no-untyped-def]
    tenants.create_tenant(rt, "contoso")
    vaults.create_local_vault(rt, VAULT, soft_delete_days=90, purge_protection=True)
    vaults.create_key(rt, VAULT, KEY, "RSA", 2048)
    pol = create_policy(rt, "contoso", "pol", region=rt.settings.default_region, vault=VAULT, key=KEY)
    vaults.grant_key(rt, VAULT, KEY, pol["identity"], "get,wrapKey,unwrapKey")
    eid = _linkable(rt)
    put_rows(rt, eid, 3)
    with rt.transaction() as s:
        assert s.get(Policy, pol["id"]).health == "undetermined"  # type: ignore[union-attr]
    job = start_link(rt, pol["id"], "contoso-dev")  # no `policy health` first: add-env checks it
    assert Worker(rt, poll_seconds=0.01).run_job(job["id"]) == "succeeded"
    with rt.transaction() as s:
        assert s.get(Policy, pol["id"]).health == "healthy"  # type: ignore[union-attr]
    assert env_row(rt, eid).enc_mode == "cmk"


def test_add_env_after_a_grant_was_removed_is_refused_and_changes_nothing(rt) -> None:  # type: ignore[no-untyped-def]
    world = cmk_world(rt)  # the policy was checked healthy
    eid = _linkable(rt)
    vaults.revoke_key_grant(
        rt, VAULT, KEY, world.identity, force=True
    )  # ... then the customer removed the grant
    before = snapshot(rt)
    with pytest.raises(ConflictError) as err:
        start_link(rt, world.policy, "contoso-dev")
    assert err.value.code == "policy_not_healthy" and "lacks" in err.value.message
    after = snapshot(rt)
    new = env_row(rt, eid)
    assert new.state == "enabled" and new.policy_id is None and new.delete_after is None
    assert [e for e in after["envs"] if e[0] == eid] == [e for e in before["envs"] if e[0] == eid]
    with rt.transaction() as s:
        refusals = s.scalars(
            select(AdminAuditEvent.outcome).where(
                AdminAuditEvent.action == "policy.add_env", AdminAuditEvent.target_id == eid
            )
        ).all()
    assert refusals == ["error"]


def _cli(rt, *args):  # type: ignore[no-untyped-def]
    base = ["--home", str(rt.home.path), "--json"]
    url = rt.settings.database_url
    if url:
        base += ["--database-url", str(url)]
    return CliRunner().invoke(app, [*base, *args], env={"KEYSHIFT_NOW": ""})


def test_policy_health_exit_codes_and_monitor_fields(rt) -> None:  # type: ignore[no-untyped-def]
    world = cmk_world(rt, rows=2)
    eid = world.envs["contoso-prod"]
    ok = _cli(rt, "policy", "health", "pol")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["health"] == "healthy"
    mon = _cli(rt, "policy", "monitor")
    assert mon.exit_code == 0, mon.stderr
    healthy = json.loads(mon.stdout)[world.policy]
    assert healthy["health"] == "healthy" and healthy["key_usable"] is True
    assert healthy["environments_disabled"] == [] and healthy["action"] == "none"

    vaults.revoke_key_grant(rt, VAULT, KEY, world.identity, force=True)
    bad = _cli(rt, "policy", "health", "pol")
    assert bad.exit_code == 4, (bad.stdout, bad.stderr)
    view = json.loads(bad.stdout)  # still printed
    assert view["health"] == "unhealthy" and view["evidence"]["check"].startswith("check access")
    assert env_row(rt, eid).state == "enabled"  # `policy health` only checks and records

    out = monitor_once(rt)[world.policy]
    assert out["key_usable"] is False and out["environments_disabled"] == [eid]
    assert out["action"] == "disabled the policy's environments"
    ev = out["evidence"]
    assert (
        ev["vault"]["name"] == VAULT
        and "fresh connection" in ev["check"]
        and ev["answer"].startswith("access_denied")
    )
    with rt.transaction() as s:
        row = s.scalars(
            select(AdminAuditEvent).where(
                AdminAuditEvent.action == "environment.disable", AdminAuditEvent.target_id == eid
            )
        ).one()
        assert row.details["evidence"] == ev and row.details["source"] == "monitor"
    shown = _cli(rt, "env", "show", "contoso-prod")
    state_ev = json.loads(shown.stdout)["state_evidence"]
    assert (
        state_ev["vault"] == ev["vault"]
        and state_ev["answer"] == ev["answer"]
        and state_ev["source"] == "monitor"
    )


def test_every_interface_wires_the_confirmed_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The SDK, the CLI and `serve` open runtimes whose data plane reports refusals to the control
    plane (control.key_events); a bare Runtime reports to nobody (its requests just fail)."""
    import keyshift
    from keyshift.bootstrap import init_home
    from keyshift.control.key_events import on_key_failure
    from keyshift.runtime import Runtime
    from keyshift.stores.keys import data_keys

    home = tmp_path / "home"
    init_home(home)
    with keyshift.open(home=home) as ks:
        assert data_keys(ks.runtime).on_key_failure == [on_key_failure]
    with Runtime.open(home=home) as bare:
        assert data_keys(bare).on_key_failure == []
