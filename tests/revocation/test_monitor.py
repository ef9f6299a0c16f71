"""The health monitor's warnings ahead of trouble, its worker hook, and the CLI around it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from keyshift.control import vaults
from keyshift.control.monitor import monitor_once
from keyshift.db.models import Policy
from keyshift.errors import EnvironmentUnavailableError
from keyshift.jobs import schedule
from keyshift.stores.keys import data_keys

from .helpers import (
    KEY,
    VAULT,
    Cli,
    audit_actions,
    cmk_world,
    current_version,
    env_row,
    read_all,
    records_store,
    snapshot,
)


def _health(rt, pid):  # type: ignore[no-untyped-def]
    with rt.transaction() as s:
        p = s.scalars(select(Policy).where(Policy.id == pid)).one()
        return p.health, list(p.health_reasons), p.health_checked_at


def test_warnings_ahead_of_trouble(sqlite_rt, clock):  # type: ignore[no-untyped-def]
    from keyshift.control.key_events import wire

    rt = wire(sqlite_rt)
    world = cmk_world(rt, soft_delete_days=7, key_expires=clock.now() + timedelta(days=45))
    eid = world.envs["contoso-prod"]
    out = monitor_once(rt)[world.policy]
    assert out["health"] == "warning" and out["environments_disabled"] == []
    assert any("keeps deleted keys 7 days" in r for r in out["reasons"])
    health, reasons, checked = _health(rt, world.policy)
    assert health == "warning" and reasons == out["reasons"] and checked == clock.now()
    assert "policy.health.warning" in [a for a, _, _ in audit_actions(rt, world.policy)]
    clock.advance(days=20)  # now 25 days before expiry
    out = monitor_once(rt)[world.policy]
    assert any("expires" in r and "within 30 days" in r for r in out["reasons"]), out
    # A new key version becomes current, the old one is disabled while DEKs still depend on it.
    old = current_version(rt)
    vaults.rotate_key(rt, VAULT, KEY)
    vaults.set_key_enabled(rt, VAULT, KEY, False, version=old, force=True)
    out = monitor_once(rt)[world.policy]
    assert out["health"] == "warning" and out["environments_disabled"] == []
    assert any(f"version {old} of key" in r and "still wrapped" in r for r in out["reasons"]), out
    assert env_row(rt, eid).state == "enabled"
    # ...and when a request actually needs that version (its cached DEK aged out), it fails closed:
    data_keys(rt).flush(eid)
    with pytest.raises(EnvironmentUnavailableError):
        records_store(rt, eid).get("t", "r00001")
    assert env_row(rt, eid).state == "disabled"
    vaults.set_key_enabled(rt, VAULT, KEY, True, version=old)
    from keyshift.control.revocation import reenable_environment

    reenable_environment(rt, eid)
    assert len(read_all(rt, eid)) == 20


def test_worker_maintenance_runs_the_monitor_on_its_interval(sqlite_rt, clock):  # type: ignore[no-untyped-def]
    rt = sqlite_rt
    world = cmk_world(rt)
    eid = world.envs["contoso-prod"]
    first = schedule.run_due(rt, only=("health",))["health"]
    assert first["policies"][world.policy]["health"] == "healthy"
    vaults.revoke_key_grant(rt, VAULT, KEY, world.identity, force=True)
    # Not due again until health_interval_seconds passed (30 s default) in this process.
    assert schedule.run_due(rt, only=("health",))["health"] == {"skipped": "not due"}
    rt.settings = rt.settings.model_copy(update={"health_interval_seconds": 0.0})
    out = schedule.run_due(rt, only=("health",))["health"]
    assert out["policies"][world.policy]["environments_disabled"] == [eid]
    assert env_row(rt, eid).state == "disabled"


def test_cli_policy_monitor_and_re_enable(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    world = cmk_world(rt)
    eid = world.envs["contoso-prod"]
    before = read_all(rt, eid)
    cli = Cli(home, db_url, clock)
    state0 = snapshot(rt)
    assert cli("env", "re-enable", "contoso-prod", code=4)["code"] == "not_disabled"
    assert cli("env", "re-enable", "nope", code=3)["code"] == "environment_not_found"
    assert snapshot(rt) == state0
    vaults.delete_key(rt, VAULT, KEY, force=True)
    assert cli("policy", "monitor", "no-such-policy", code=3)["code"] == "policy_not_found"
    out = cli("policy", "monitor", "pol")
    assert out[world.policy]["health"] == "unhealthy" and out[world.policy]["environments_disabled"] == [eid]
    assert cli("policy", "monitor")[world.policy]["environments_disabled"] == []  # already disabled
    assert cli("data", "get", "contoso-prod", "t", "r00001", code=7)["code"] == "environment_disabled"
    state1 = snapshot(rt)
    err = cli("env", "re-enable", "contoso-prod", code=6)
    assert err["code"] == "key_inaccessible" and "deleted" in err["message"]
    assert snapshot(rt) == state1  # still disabled, still scheduled
    vaults.recover_key(rt, VAULT, KEY)
    out = cli("env", "re-enable", "contoso-prod")
    assert out["state"] == "enabled" and out["identity"] == world.identity
    assert cli("data", "get", "contoso-prod", "t", "r00001") == before["r00001"]
    assert read_all(rt, eid) == before


def test_unhealthy_for_configuration_only_keeps_serving(sqlite_rt, clock):  # type: ignore[no-untyped-def]
    """Purge protection turned off makes the policy unhealthy (no new links), but the key still
    wraps and unwraps: the monitor does not take the environments down."""
    from sqlalchemy import update

    from keyshift.db.models import VaultRecord

    rt = sqlite_rt
    world = cmk_world(rt)
    eid = world.envs["contoso-prod"]
    with rt.transaction() as s:
        s.execute(update(VaultRecord).where(VaultRecord.name == VAULT).values(purge_protection=False))
    out = monitor_once(rt)[world.policy]
    assert out["health"] == "unhealthy" and out["environments_disabled"] == [] and out["key_usable"] is True
    assert any("purge protection" in r for r in out["reasons"])
    assert env_row(rt, eid).state == "enabled" and len(read_all(rt, eid)) == 20
    vaults.set_key_enabled(rt, VAULT, KEY, False, force=True)  # now the key itself goes: disabled
    assert monitor_once(rt)[world.policy]["environments_disabled"] == [eid]
