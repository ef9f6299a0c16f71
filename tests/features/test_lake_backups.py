"""Lake exports (Parquet modular encryption through our vault-backed KMS client) and backups
(encrypted snapshots, restore, copy, retention), including the storages following a key change."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

import keyshift.features  # noqa: F401
from features.helpers import make_env, snapshot
from keyshift.db.models import Environment, VaultRecord
from keyshift.errors import ConflictError, EnvironmentUnavailableError, IntegrityError, NotFoundError
from keyshift.features import backups, lake, restore, search, search_jobs
from keyshift.jobs import schedule
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.envstate import env_states
from keyshift.stores.files import FileStore
from keyshift.stores.keys import KekTarget, rewrap_environment
from keyshift.stores.records import RecordStore
from keyshift.vaults.base import ALL_PERMISSIONS, KeyType

SECRET = "Zanzibar-Plaintext-Marker"


def _lake_file(rt: Runtime, env_id: str, path: str) -> Path:
    return rt.settings.home_path() / "files" / f"{env_id}.lake" / (path + ".ksf")


def _populate(rt: Runtime, name: str = "contoso-prod", tenant: str = "contoso") -> str:
    env = make_env(rt, name, tenant=tenant)
    RecordStore(rt, env).put_many(
        "accounts", [(f"a{i}", {"name": f"{SECRET} {i}", "city": "Paris"}) for i in range(5)]
    )
    AuditLog(rt, env).append({"who": "alice", "what": SECRET})
    FileStore(rt, env).put("docs/a.txt", SECRET.encode() * 100)
    return env


def _other_key(rt: Runtime, name: str = "other-kek") -> KekTarget:
    vault = rt.vault(rt.settings.platform_vault)
    vault.create_key(name, KeyType.AES, 256)  # type: ignore[attr-defined]
    vault.grant(name, rt.settings.platform_identity, ALL_PERMISSIONS)  # type: ignore[attr-defined]
    with rt.transaction() as s:
        vid = s.scalars(select(VaultRecord.id).where(VaultRecord.name == rt.settings.platform_vault)).one()
    return KekTarget(vid, name, rt.settings.platform_identity)


def test_lake_export_reads_back_and_a_standard_reader_needs_our_kms(rt: Runtime) -> None:
    env = _populate(rt)
    out = lake.export_table(rt, "contoso-prod", "accounts")
    assert out["rows"] == 5
    back = lake.read_export(rt, "contoso-prod", out["path"])
    assert [r["id"] for r in back["records"]] == [f"a{i}" for i in range(5)]
    assert back["records"][0]["value"]["name"] == f"{SECRET} 0"
    raw = _lake_file(rt, env, out["path"]).read_bytes()
    assert raw[:4] == b"PARE" and SECRET.encode() not in raw
    # A standard Parquet reader with the matching KMS client reads it ...
    view = env_states(rt).require_usable(env)
    props, _ = lake.decryption_properties(rt, view)
    table = pq.read_table(pa.BufferReader(raw), decryption_properties=props)
    assert table.num_rows == 5 and table.column("id").to_pylist()[0] == "a0"
    # ... without it, or with another environment's client, nothing can.
    with pytest.raises(OSError):
        pq.read_table(pa.BufferReader(raw))
    other = env_states(rt).require_usable(make_env(rt, "contoso-dev"))
    props2, _ = lake.decryption_properties(rt, other)
    with pytest.raises(Exception):  # noqa: B017 - pyarrow surfaces the KMS refusal as its own error
        pq.read_table(pa.BufferReader(raw), decryption_properties=props2)


def test_corrupt_parquet_is_an_integrity_error(rt: Runtime) -> None:
    env = _populate(rt)
    out = lake.export_table(rt, "contoso-prod", "accounts")
    f = _lake_file(rt, env, out["path"])
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    before = snapshot(rt)
    with pytest.raises(IntegrityError) as e:
        lake.read_export(rt, "contoso-prod", out["path"])
    assert SECRET not in e.value.message
    with pytest.raises(NotFoundError):
        lake.read_export(rt, "contoso-prod", "accounts/missing.parquet")
    with pytest.raises(NotFoundError):
        lake.export_table(rt, "contoso-prod", "no_such_table")
    assert snapshot(rt) == before


def test_storages_follow_a_key_change(rt: Runtime) -> None:
    env = _populate(rt)
    view = search_jobs.set_fields(rt, "contoso-prod", "accounts", ["name"])
    Worker(rt).run_job(view["job"])
    out = lake.export_table(rt, "contoso-prod", "accounts")
    b = backups.create_backup(rt, "contoso-prod")
    rewrap_environment(rt, env, _other_key(rt), old_wraps="destroyed")
    rt.forget_vault()
    from keyshift.stores.keys import flush

    flush(rt, env)
    assert len(search.search(rt, "contoso-prod", "accounts", "zanzibar")["results"]) == 5
    assert lake.read_export(rt, "contoso-prod", out["path"])["rows"] == 5
    RecordStore(rt, env).delete("accounts", "a0")
    restore.restore_backup(rt, "contoso-prod", b["id"])
    assert len(list(RecordStore(rt, env).scan("accounts"))) == 5


def test_backup_and_restore_bring_everything_back(rt: Runtime) -> None:
    env = _populate(rt)
    view = search_jobs.set_fields(rt, "contoso-prod", "accounts", ["name", "city"])
    Worker(rt).run_job(view["job"])
    exported = lake.export_table(rt, "contoso-prod", "accounts")
    b = backups.create_backup(rt, "contoso-prod", note="before changes")
    assert b["counts"] == {"records": 5, "audit": 1, "files": 1, "lake": 1, "search_tables": 1}
    archive = rt.settings.home_path() / "files" / f"{env}.backups" / f"{b['id']}.ksb.ksf"
    assert SECRET.encode() not in archive.read_bytes()
    rs, files = RecordStore(rt, env), FileStore(rt, env)
    rs.put("accounts", "a9", {"name": "later", "city": "Oslo"})
    rs.delete("accounts", "a1")
    files.put("docs/b.txt", b"later")
    AuditLog(rt, env).append({"later": True})
    out = restore.restore_backup(rt, "contoso-prod", b["id"])
    assert out["restored"]["records"] == 5
    assert [r.id for r in rs.scan("accounts")] == [f"a{i}" for i in range(5)]
    assert rs.get("accounts", "a1") == {"name": f"{SECRET} 1", "city": "Paris"}
    assert files.list() == [{"path": "docs/a.txt", "size": len(SECRET) * 100}]
    assert [e["event"] for e in AuditLog(rt, env).query()] == [{"who": "alice", "what": SECRET}]
    assert len(search.search(rt, "contoso-prod", "accounts", "paris")["results"]) == 5
    assert search.search(rt, "contoso-prod", "accounts", "oslo")["results"] == []
    assert lake.read_export(rt, "contoso-prod", exported["path"])["rows"] == 5
    assert [x["id"] for x in backups.list_backups(rt, "contoso-prod")] == [b["id"]]


def test_corrupt_backup_restores_nothing(rt: Runtime) -> None:
    env = _populate(rt)
    b = backups.create_backup(rt, "contoso-prod")
    RecordStore(rt, env).put("accounts", "a9", {"name": "after"})
    archive = rt.settings.home_path() / "files" / f"{env}.backups" / f"{b['id']}.ksb.ksf"
    good = archive.read_bytes()
    for bad in (good[: len(good) - 40], good[:100] + bytes([good[100] ^ 1]) + good[101:]):
        archive.write_bytes(bad)
        before = snapshot(rt)
        files_before = FileStore(rt, env).list()
        with pytest.raises(IntegrityError) as e:
            restore.restore_backup(rt, "contoso-prod", b["id"])
        assert e.value.code == "integrity_error" and SECRET not in e.value.message
        after = snapshot(rt)
        assert {k: v for k, v in after.items() if k != "jobs"} == {
            k: v for k, v in before.items() if k != "jobs"
        }
        assert FileStore(rt, env).list() == files_before
        assert RecordStore(rt, env).get("accounts", "a9") == {"name": "after"}


def test_copy_only_within_one_tenant_and_key(rt: Runtime) -> None:
    _populate(rt)
    dev = make_env(rt, "contoso-dev")
    make_env(rt, "fabrikam-prod", tenant="fabrikam")
    b = backups.create_backup(rt, "contoso-prod")
    before = snapshot(rt)
    with pytest.raises(ConflictError) as e:
        restore.restore_backup(rt, "contoso-dev", b["id"])  # another environment's backup
    assert e.value.code == "backup_other_environment"
    with pytest.raises(NotFoundError):
        restore.restore_backup(rt, "contoso-prod", "bak_nope")
    assert snapshot(rt) == before
    out = restore.copy_environment(rt, "contoso-prod", "contoso-dev")
    assert out["restored"]["records"] == 5
    assert RecordStore(rt, dev).get("accounts", "a2")["name"] == f"{SECRET} 2"
    assert FileStore(rt, dev).get("docs/a.txt") == SECRET.encode() * 100
    with pytest.raises(ConflictError) as e:
        restore.copy_environment(rt, "contoso-prod", "fabrikam-prod")
    assert e.value.code == "different_tenant"
    rewrap_environment(rt, dev, _other_key(rt))
    env_states(rt).invalidate()
    before = snapshot(rt)
    with pytest.raises(ConflictError) as e:
        restore.copy_environment(rt, "contoso-prod", "contoso-dev")
    assert e.value.code == "different_key" and "same key" in e.value.message
    assert snapshot(rt) == before


def test_backups_refused_without_feature_or_under_sql_restriction(rt: Runtime) -> None:
    disabled = make_env(rt, "contoso-off")
    with rt.transaction() as s:
        s.get(Environment, disabled).state = "disabled"  # type: ignore[union-attr]
    make_env(rt, features=["search"])
    make_env(rt, "legacy-prod", tenant="legacy", byok=True)
    before = snapshot(rt)
    with pytest.raises(ConflictError) as e:
        backups.create_backup(rt, "contoso-prod")
    assert e.value.code == "feature_not_enabled"
    with pytest.raises(ConflictError) as e:
        backups.create_backup(rt, "legacy-prod")
    assert e.value.code == "sql_restriction"
    with pytest.raises(ConflictError) as e:
        lake.export_table(rt, "legacy-prod", "accounts")
    assert e.value.code == "sql_restriction"
    # A disabled environment (e.g. its key revoked) fails closed for every feature storage: exit 7.
    for call in (
        lambda: backups.create_backup(rt, "contoso-off"),
        lambda: lake.export_table(rt, "contoso-off", "accounts"),
        lambda: search.search(rt, "contoso-off", "accounts", "paris"),
        lambda: restore.copy_environment(rt, "contoso-off", "contoso-prod"),
    ):
        with pytest.raises(EnvironmentUnavailableError) as e2:
            call()
        assert e2.value.exit_code == 7
    assert snapshot(rt) == before


def test_expired_backups_are_purged_by_maintenance_and_not_before(rt: Runtime) -> None:
    env = _populate(rt)
    b = backups.create_backup(rt, "contoso-prod", retention_days=3)
    archive = rt.settings.home_path() / "files" / f"{env}.backups" / f"{b['id']}.ksb.ksf"
    rt.clock.advance(days=2, hours=23)  # type: ignore[attr-defined]
    assert schedule.run_due(rt, only=("purge_backups",))["purge_backups"] == {"purged": []}
    assert archive.exists()
    rt.clock.advance(hours=1)  # type: ignore[attr-defined]
    assert schedule.run_due(rt, only=("purge_backups",))["purge_backups"] == {"purged": [b["id"]]}
    assert not archive.exists()
    assert backups.list_backups(rt, "contoso-prod") == []
    with pytest.raises(NotFoundError) as e:
        restore.restore_backup(rt, "contoso-prod", b["id"])
    assert e.value.code == "backup_purged"
