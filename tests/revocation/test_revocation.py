"""Revocation, in one process: each kind of key loss disables the policy's environments through the
monitor (path a) and through the data plane's own refused unwrap (path b); re-enable restores all.

The vault-unreachable case uses FaultyVault — a FAKE wrapper around the real local vault — because
an embedded vault cannot be unplugged; every other case uses the real local vault.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from keyshift.control.monitor import monitor_once
from keyshift.control.revocation import reenable_environment
from keyshift.db.models import Policy
from keyshift.errors import EnvironmentUnavailableError, KeyInaccessibleError, VaultUnavailableError
from keyshift.stores.keys import data_keys
from keyshift.stores.service import EnvironmentData

from .helpers import KINDS, audit_actions, cmk_world, env_row, read_all, records_store, revoke


def _policy(rt, pid):  # type: ignore[no-untyped-def]
    with rt.transaction() as s:
        p = s.scalars(select(Policy).where(Policy.id == pid)).one()
        s.expunge(p)
        return p


def _refused(rt, env_id):  # type: ignore[no-untyped-def]
    store = records_store(rt, env_id)
    with pytest.raises(EnvironmentUnavailableError) as read_err:
        store.get("t", "r00001")
    with pytest.raises(EnvironmentUnavailableError) as write_err:
        store.put("t", "new", {"x": 1})
    for err in (read_err.value, write_err.value):
        assert err.code == "environment_disabled" and err.exit_code == 7


def test_monitor_disables_every_env_of_the_policy_and_reenable_restores_all(rt, clock):  # type: ignore[no-untyped-def]
    """Each kind in turn on one world: revoke -> monitor -> refused (exit 7) -> undo -> re-enable."""
    world = cmk_world(
        rt,
        (("contoso-prod", "production"), ("contoso-sbx", "sandbox")),
        key_expires=clock.now() + timedelta(days=60),
    )
    before = {eid: read_all(rt, eid) for eid in world.envs.values()}
    assert all(len(v) == 20 for v in before.values())
    for kind in KINDS:
        _cycle(rt, clock, world, kind, before)


def _cycle(rt, clock, world, kind, before):  # type: ignore[no-untyped-def]
    undo = revoke(rt, kind, world, clock)
    if kind == "vault_unreachable":
        # Within the grace period: a warning, nothing disabled, cached keys keep serving.
        out = monitor_once(rt)[world.policy]
        assert out["health"] == "warning" and out["environments_disabled"] == [], (kind, out)
        assert all(env_row(rt, e).state == "enabled" for e in world.envs.values())
        assert read_all(rt, world.envs["contoso-prod"]) == before[world.envs["contoso-prod"]]
        clock.advance(seconds=rt.settings.vault_grace_seconds + 1)
    out = monitor_once(rt)[world.policy]
    assert out["health"] == "unhealthy", (kind, out)
    assert sorted(out["environments_disabled"]) == sorted(world.envs.values()), kind
    assert _policy(rt, world.policy).health == "unhealthy"
    now = clock.now()
    for name, eid in world.envs.items():
        _refused(rt, eid)
        row = env_row(rt, eid)
        assert row.state == "disabled" and row.state_reason.startswith("key revoked: "), kind
        days = 30 if name == "contoso-prod" else 7
        assert row.delete_after is not None and row.delete_after == now + timedelta(days=days)
        reasons = [r for a, _, r in audit_actions(rt, eid) if a == "environment.disable"]
        assert reasons and reasons[-1] == row.state_reason
        assert "environment.deletion.scheduled" in [a for a, _, _ in audit_actions(rt, eid)]
        assert len(data_keys(rt).cache) == 0  # flushed in this process
    # Re-enable is refused while the key is still unusable, and changes nothing.
    with pytest.raises(KeyInaccessibleError):
        reenable_environment(rt, "contoso-prod")
    assert env_row(rt, "contoso-prod").state == "disabled"
    assert audit_actions(rt, world.envs["contoso-prod"])[-1][:2] == ("environment.re_enable", "error")
    undo()
    for name, eid in world.envs.items():
        out2 = reenable_environment(rt, name)
        assert out2["state"] == "enabled" and out2["deks_checked"] >= 1
        row = env_row(rt, eid)
        assert row.state == "enabled" and row.delete_after is None and row.state_reason is None
        assert read_all(rt, eid) == before[eid], kind  # every record reads back equal
        assert audit_actions(rt, eid)[-1][:2] == ("environment.re_enable", "ok")


def test_data_plane_refusal_disables_without_the_monitor(sqlite_rt, clock, monkeypatch):  # type: ignore[no-untyped-def]
    from keyshift.control import key_events

    monkeypatch.setattr(key_events, "RECHECK_SECONDS", 0.0)  # each kind gets its own policy check
    rt = key_events.wire(sqlite_rt)
    world = cmk_world(rt, key_expires=clock.now() + timedelta(days=60))
    eid = world.envs["contoso-prod"]
    before = read_all(rt, eid)
    from keyshift.db.models import Dek

    with rt.transaction() as s:  # no audit DEK yet: the first audit event must wrap a new one
        assert (
            s.scalars(select(Dek.id).where(Dek.environment_id == eid, Dek.store == "audit")).first() is None
        )
    for kind in [k for k in KINDS if k != "vault_unreachable"]:
        undo = revoke(rt, kind, world, clock)
        data_keys(rt).flush(eid)  # the cached DEK reached its max age (<= the revocation bound)
        with pytest.raises(EnvironmentUnavailableError) as err:
            if kind == "grant_removed":  # a first audit event needs a new DEK: the *wrap* is refused
                EnvironmentData(rt, eid).audit.append({"first": True})
            else:  # a read needs the cached-out DEK: the *unwrap* is refused
                records_store(rt, eid).get("t", "r00001")
        assert err.value.code == "environment_disabled", kind
        row = env_row(rt, eid)
        assert row.state == "disabled" and row.state_reason.startswith("key revoked: "), kind
        details = _last_disable_details(rt, eid)
        assert details["source"] == "data_plane"
        assert _policy(rt, world.policy).health == "unhealthy"
        _refused(rt, eid)
        undo()
        reenable_environment(rt, eid)
        assert read_all(rt, eid) == before


def _last_disable_details(rt, eid):  # type: ignore[no-untyped-def]
    from keyshift.db.models import AdminAuditEvent

    with rt.transaction() as s:
        return s.scalars(
            select(AdminAuditEvent.details)
            .where(AdminAuditEvent.target_id == eid, AdminAuditEvent.action == "environment.disable")
            .order_by(AdminAuditEvent.id.desc())
        ).first()


def test_transient_vault_error_within_grace_keeps_envs_up(sqlite_rt, clock):  # type: ignore[no-untyped-def]
    from .helpers import faulty

    rt = sqlite_rt
    world = cmk_world(rt)
    eid = world.envs["contoso-prod"]
    before = read_all(rt, eid)
    fv = faulty(rt)
    fv.go_down()
    data_keys(rt).flush(eid)
    with pytest.raises(VaultUnavailableError) as err:  # the request fails (exit 6, retryable)...
        records_store(rt, eid).get("t", "r00001")
    assert err.value.exit_code == 6
    assert monitor_once(rt)[world.policy]["health"] == "warning"
    assert env_row(rt, eid).state == "enabled"  # ...but the environment stays up
    clock.advance(seconds=rt.settings.vault_grace_seconds / 2)
    assert monitor_once(rt)[world.policy]["environments_disabled"] == []
    fv.come_back()
    assert read_all(rt, eid) == before
    assert monitor_once(rt)[world.policy]["health"] == "healthy"
    assert env_row(rt, eid).state == "enabled"
