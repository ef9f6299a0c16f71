"""BYOK -> CMK: preconditions, moves out of SQL, retention, restore, finalization, vault deletion."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keyshift.control import tenants
from keyshift.errors import ConflictError
from keyshift.jobs import schedule
from keyshift.migrate.link import start_link, start_unlink
from keyshift.migrate.restore import start_restore
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys

from .helpers import byok_world, customer_key, env_row, fill, job, make_policy, read_all, run, wraps


def _fab(rt: Runtime, tmp_path: Path) -> dict[str, Any]:
    w = byok_world(rt, tmp_path)
    env_id = w["envs"]["fab-prod"]
    w["env"] = env_id
    w["data"] = fill(rt, env_id, rows=40, events=15, files=4)
    vault, key = customer_key(rt, "fab-kv", "fab-cmk")
    w["policy"] = make_policy(rt, "fabrikam", "fab-pol", vault, key)
    return w


@pytest.fixture
def fab(sqlite_rt: Runtime, tmp_path: Path) -> dict[str, Any]:
    """SQLite only: these rules are not about the SQL backend (the main migration runs on both)."""
    return _fab(sqlite_rt, tmp_path)


@pytest.fixture
def fab_any(rt: Runtime, tmp_path: Path) -> dict[str, Any]:
    return _fab(rt, tmp_path)


def test_byok_link_refused_while_the_flag_is_on(sqlite_rt: Runtime, fab: dict[str, Any]) -> None:
    rt = sqlite_rt
    before = env_row(rt, "fab-prod")
    with pytest.raises(ConflictError) as exc:
        start_link(rt, "fab-pol", "fab-prod")
    assert exc.value.code == "byok_feature_on"
    assert env_row(rt, "fab-prod").version == before.version


def _migrate(rt: Runtime, fab: dict[str, Any]) -> str:
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-1234")
    view = start_link(rt, "fab-pol", "fab-prod")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    return str(view["id"])


def test_byok_to_cmk_moves_audit_keeps_everything_and_finalizes(rt: Runtime, fab_any: dict[str, Any]) -> None:
    fab = fab_any
    now = rt.clock.now()
    job_id = _migrate(rt, fab)
    env = env_row(rt, "fab-prod")
    assert (env.enc_mode, env.enc_managed_by) == ("cmk", "customer_via_platform")
    assert env.migrated_from_byok_at == now and env.restore_until == now + timedelta(days=28)
    assert env.stores["audit"] == "document" and "audit_from" not in env.stores
    data_keys(rt).flush()
    got = read_all(rt, fab["env"])
    assert got["rows"] == fab["data"]["rows"]
    assert got["events"] == fab["data"]["events"]
    assert got["files"] == fab["data"]["files"]
    assert env.stores["files"] == "file_storage" and "files_from" not in env.stores
    # the BYOK wraps are retained for the restore window, not used
    retained = [w for w in wraps(rt, fab["env"]) if w[1] == "retained"]
    assert retained
    t = tenants.show_tenant(rt, "fabrikam")
    assert t["sql_restriction"] is False
    assert t["final_byok_migration_at"] == now.isoformat().replace("+00:00", "Z")
    assert t["byok_vault"]["state"] == "scheduled_deletion"
    assert t["byok_vault"]["delete_after"] == (now + timedelta(days=28)).isoformat().replace("+00:00", "Z")
    assert job(rt, job_id)["done"] == job(rt, job_id)["total"]


def test_env_list_with_policies_lists_the_migrated_env(sqlite_rt: Runtime, fab: dict[str, Any]) -> None:
    rt = sqlite_rt
    from keyshift.control import environments

    _migrate(rt, fab)
    listed = environments.list_environments(rt, with_policies=True)
    names = [e["name"] for e in listed]
    assert "fab-prod" in names


def test_unlink_blocked_for_seven_days_after_migration(
    sqlite_rt: Runtime, fab: dict[str, Any], clock: Any
) -> None:
    rt = sqlite_rt
    _migrate(rt, fab)
    with pytest.raises(ConflictError) as exc:
        start_unlink(rt, "fab-pol", "fab-prod")
    assert exc.value.code == "unlink_blocked"
    clock.advance(days=7, seconds=1)
    view = start_unlink(rt, "fab-pol", "fab-prod")
    assert run(rt, view["id"]) == "succeeded"
    env = env_row(rt, "fab-prod")
    assert (env.enc_mode, env.policy_id, env.kek_key_name) == ("platform", None, rt.settings.platform_key)
    data_keys(rt).flush()
    assert read_all(rt, fab["env"])["rows"] == fab["data"]["rows"]


def test_byok_apply_refused_after_migration(sqlite_rt: Runtime, fab: dict[str, Any]) -> None:
    rt = sqlite_rt
    from keyshift.control import byok

    _migrate(rt, fab)
    with pytest.raises(ConflictError):
        byok.apply(rt, "fab-prod")
    assert env_row(rt, "fab-prod").enc_mode == "cmk"


def test_restore_before_migration_brings_back_byok_and_keeps_later_writes(
    sqlite_rt: Runtime, fab: dict[str, Any], clock: Any
) -> None:
    rt = sqlite_rt
    from keyshift.stores.audit import AuditLog
    from keyshift.stores.records import RecordStore

    _migrate(rt, fab)
    clock.advance(days=3)
    later = AuditLog(rt, fab["env"]).append({"after": "migration"})
    from keyshift.stores.files import FileStore

    FileStore(rt, fab["env"]).put("docs/f0.bin", b"rewritten after migration")
    FileStore(rt, fab["env"]).put("new/after.txt", b"new after migration")
    RecordStore(rt, fab["env"]).put("t", "late", {"late": True})
    view = start_restore(rt, "fab-prod")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    env = env_row(rt, "fab-prod")
    assert (env.enc_mode, env.enc_managed_by, env.policy_id) == ("byok", "customer", None)
    assert env.stores == {"records": "sql", "audit": "sql", "files": "sql"}
    assert env.migrated_from_byok_at is None
    current = [w for w in wraps(rt, fab["env"]) if w[1] == "current"]
    assert current and all(w[3] != "fab-cmk" for w in current)
    data_keys(rt).flush()
    got = read_all(rt, fab["env"])
    assert got["rows"] == {**fab["data"]["rows"], "late": {"late": True}}
    assert got["events"] == {**fab["data"]["events"], later: {"after": "migration"}}
    assert got["files"] == {
        **fab["data"]["files"],
        "docs/f0.bin": b"rewritten after migration",
        "new/after.txt": b"new after migration",
    }
    t = tenants.show_tenant(rt, "fabrikam")
    assert t["sql_restriction"] is True and t["final_byok_migration_at"] is None
    assert t["byok_vault"]["state"] == "active"


def test_restore_refused_after_the_window_and_maintenance_purges(
    sqlite_rt: Runtime, fab: dict[str, Any], clock: Any
) -> None:
    rt = sqlite_rt
    from sqlalchemy import func, select

    from keyshift.db.models import DataAuditRow

    _migrate(rt, fab)
    clock.advance(days=27)
    assert schedule.run_due(rt, only=("purge_retained",))["purge_retained"]["environments_purged"] == []
    clock.advance(days=1)
    with pytest.raises(ConflictError) as exc:
        start_restore(rt, "fab-prod")
    assert exc.value.code == "restore_window_over"
    out = schedule.run_due(rt, only=("purge_retained",))["purge_retained"]
    assert out["environments_purged"] == [fab["env"]] and out["wraps_destroyed"] > 0
    with rt.transaction() as s:
        n = s.scalar(
            select(func.count()).select_from(DataAuditRow).where(DataAuditRow.environment_id == fab["env"])
        )
    assert n == 0
    assert not [w for w in wraps(rt, fab["env"]) if w[1] == "retained"]
    data_keys(rt).flush()
    got = read_all(rt, fab["env"])
    assert got["rows"] == fab["data"]["rows"] and got["events"] == fab["data"]["events"]


def test_maintenance_deletes_the_byok_vault_when_due_and_not_before(
    sqlite_rt: Runtime, fab: dict[str, Any], clock: Any
) -> None:
    rt = sqlite_rt
    _migrate(rt, fab)
    clock.advance(days=28, seconds=-1)
    out = schedule.run_due(rt, only=("delete_byok_vaults",))["delete_byok_vaults"]
    assert out["deleted"] == []
    assert tenants.show_tenant(rt, "fabrikam")["byok_vault"]["state"] == "scheduled_deletion"
    clock.advance(seconds=1)
    out = schedule.run_due(rt, only=("delete_byok_vaults",))["delete_byok_vaults"]
    assert out["deleted"] == ["byok-fabrikam"]
    assert tenants.show_tenant(rt, "fabrikam")["byok_vault"]["state"] == "deleted"
    data_keys(rt).flush()
    assert read_all(rt, fab["env"])["rows"] == fab["data"]["rows"]


def test_a_write_from_a_process_with_a_stale_layout_is_not_lost(
    sqlite_rt: Runtime, fab: dict[str, Any]
) -> None:
    """Another process still sees the SQL layout after cutover (its view is stale up to the
    refresh bound) and appends to SQL after the move was planned: the sweep carries it over."""
    from keyshift.jobs.runner import Worker
    from keyshift.stores.audit import AuditLog

    rt = sqlite_rt
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-77")
    stale = Runtime.open(
        home=rt.settings.home_path(),
        settings=rt.settings.model_copy(update={"state_refresh_seconds": 3600.0}),
        clock=rt.clock,
        principal="service:stale",
    )
    try:
        AuditLog(stale, fab["env"]).append({"warm": True})  # caches the pre-migration layout
        view = start_link(rt, "fab-pol", "fab-prod")
        w = Worker(rt, poll_seconds=0.01)
        while job(rt, view["id"])["phase"] not in ("move_audit",) or not job(rt, view["id"])["total"]:
            w.step(view["id"])
        late = AuditLog(stale, fab["env"]).append({"late": True})  # lands in SQL, after planning
        assert w.run_job(view["id"]) == "succeeded"
    finally:
        stale.close()
    data_keys(rt).flush()
    from keyshift.stores.audit import DocumentAudit

    in_doc = [e.event_id for e in DocumentAudit(rt).query(fab["env"], None, None, 1000)]
    assert late in in_doc, "the in-flight write was not carried over"
    assert read_all(rt, fab["env"])["events"][late] == {"late": True}


def test_a_byok_tenants_platform_env_leaves_the_sql_layout_when_linked(
    sqlite_rt: Runtime, fab: dict[str, Any]
) -> None:
    from sqlalchemy import func, select

    from keyshift.control import environments
    from keyshift.db.models import DataAuditRow

    rt = sqlite_rt
    plain = environments.create_environment(rt, "fabrikam", "fab-plain", env_type="sandbox")
    environments.set_managed(rt, "fab-plain", True)
    assert env_row(rt, "fab-plain").stores["audit"] == "sql"
    data = fill(rt, plain["id"], rows=10, events=5, files=2)
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-5")
    view = start_link(rt, "fab-pol", "fab-plain")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    env = env_row(rt, "fab-plain")
    assert env.stores["audit"] == "document" and env.stores["files"] == "file_storage"
    assert env.migrated_from_byok_at is None and env.restore_until is None
    with rt.transaction() as s:
        left = s.scalar(
            select(func.count()).select_from(DataAuditRow).where(DataAuditRow.environment_id == plain["id"])
        )
    assert left == 0  # no restore window: the SQL copy is gone at once
    data_keys(rt).flush()
    got = read_all(rt, plain["id"])
    assert (got["rows"], got["events"], got["files"]) == (data["rows"], data["events"], data["files"])
    # the BYOK environment is still BYOK: no finalization yet
    assert tenants.show_tenant(rt, "fabrikam")["final_byok_migration_at"] is None
