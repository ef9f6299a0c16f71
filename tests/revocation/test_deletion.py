"""Deletion schedules: environments disabled by a revoked key are deleted after 30 days (production)
or 7 days (other types), with warnings at scheduling and a day before; maintenance deletes what is
due and nothing early; operators cancel."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from keyshift.control import environments
from keyshift.control.monitor import monitor_once
from keyshift.db.models import DataRecord, Dek, DekWrap
from keyshift.features import backups
from keyshift.jobs import schedule
from keyshift.stores.file_backends import backend as file_backend
from keyshift.stores.service import EnvironmentData

from .helpers import Cli, audit_actions, cmk_world, env_row, read_all, revoke, snapshot


def _count(rt, model, env_id):  # type: ignore[no-untyped-def]
    with rt.transaction() as s:
        return s.scalar(select(func.count()).select_from(model).where(model.environment_id == env_id))


def test_schedule_warn_delete_when_due_and_cancel(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    world = cmk_world(rt, (("contoso-prod", "production"), ("contoso-sbx", "sandbox")), rows=10)
    prod, sbx = world.envs["contoso-prod"], world.envs["contoso-sbx"]
    for eid in (prod, sbx):
        data = EnvironmentData(rt, eid)
        data.audit.append({"who": "alice", "what": "login"})
        data.files.put("docs/a.txt", b"hello " * 100)
    environments.enable_feature(rt, "contoso-sbx", "long-term-retention")
    backup = backups.create_backup(rt, "contoso-sbx")
    assert file_backend(rt, "file_storage").list(f"{sbx}.backups", "") != []
    revoke(rt, "key_disabled", world, clock)
    t0 = clock.now()
    monitor_once(rt)
    assert env_row(rt, prod).delete_after == t0 + timedelta(days=30)
    assert env_row(rt, sbx).delete_after == t0 + timedelta(days=7)

    def due() -> dict:  # type: ignore[type-arg]
        return schedule.run_due(rt, only=("deletions",))["deletions"]

    assert due() == {"warned": [], "deleted": [], "errors": {}}
    clock.set(t0 + timedelta(days=6, hours=1))
    assert due()["warned"] == [sbx]
    assert due()["warned"] == []  # one warning per schedule
    warnings = [r for a, _, r in audit_actions(rt, sbx) if a == "environment.deletion.warning"]
    assert len(warnings) == 1 and "will be deleted after" in warnings[0]
    clock.set(t0 + timedelta(days=7) - timedelta(seconds=1))
    assert due()["deleted"] == []  # nothing early
    assert env_row(rt, sbx).state == "disabled"
    clock.set(t0 + timedelta(days=7))
    assert due()["deleted"] == [sbx]
    row = env_row(rt, sbx)
    assert row.state == "deleted" and "scheduled deletion" in row.state_reason
    assert _count(rt, DataRecord, sbx) == 0
    with rt.transaction() as s:
        states = set(s.scalars(select(Dek.state).where(Dek.environment_id == sbx)))
        wrapped = set(
            s.scalars(
                select(DekWrap.wrapped).join(Dek, Dek.id == DekWrap.dek_id).where(Dek.environment_id == sbx)
            )
        )
    assert states == {"destroyed"} and wrapped == {b""}
    from keyshift.stores.audit import backend as audit_backend

    assert audit_backend(rt, "document").count(sbx) == 0
    assert file_backend(rt, "file_storage").list(sbx, "") == []
    assert file_backend(rt, "file_storage").list(f"{sbx}.backups", "") == []
    assert backups.list_backups(rt, sbx, include_purged=True) == [] and backup["id"]
    assert "environment.delete" in [a for a, _, _ in audit_actions(rt, sbx)]
    # The production environment is untouched so far; an operator cancels its deletion.
    assert env_row(rt, prod).state == "disabled" and _count(rt, DataRecord, prod) == 10
    cli = Cli(home, db_url, clock)
    shown = cli("env", "deletion", "show", "contoso-prod")
    assert shown["delete_after"] == (t0 + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    out = cli("env", "deletion", "cancel", "contoso-prod")
    assert out["delete_after"] is None and out["state"] == "disabled"
    before = snapshot(rt)
    err = cli("env", "deletion", "cancel", "contoso-prod", code=4)
    assert err["code"] == "no_deletion_scheduled"
    err = cli("env", "deletion", "cancel", "no-such-env", code=3)
    assert snapshot(rt) == before  # refusals change nothing
    assert audit_actions(rt, prod)[-1][:2] == ("environment.deletion.cancel", "error")
    clock.set(t0 + timedelta(days=60))
    assert cli("maintenance", "run")["deletions"]["deleted"] == []
    assert env_row(rt, prod).state == "disabled"
    # Data kept through the cancelled schedule reads back after the key is restored and re-enabled.
    from keyshift.control import vaults
    from keyshift.control.revocation import reenable_environment

    from .helpers import KEY, VAULT

    clock.set(t0)
    vaults.set_key_enabled(rt, VAULT, KEY, True)
    reenable_environment(rt, prod)
    assert len(read_all(rt, prod)) == 10
