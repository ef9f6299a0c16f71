"""No dead ends for a legacy BYOK tenant: the tenant lock ends when no locked environment is left,
the tenant finalizes however its last BYOK environment leaves (migrated, reverted, deleted), and
lifting the SQL restriction moves the remaining environments' audit and files out of SQL (a job).
Through the CLI with the fake clock (KEYSHIFT_NOW), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from keyshift.control import byok, environments, tenants
from keyshift.db.models import Tenant
from keyshift.jobs.runner import Worker
from keyshift.stores.service import EnvironmentData
from keyshift.timefmt import iso_z

from .helpers import Cli, audit_actions, env_row, put_rows, read_all, snapshot

PW = "correct horse battery staple 1"
BIG = 130 << 20  # over the 128 MiB the SQL store accepts


def _byok_tenant(rt: Any, tmp_path: Any, envs: tuple[str, ...] = ("fab-prod", "fab-sbx")) -> dict[str, str]:
    """Tenant `fab` (BYOK), key k1 active, BYOK environments `envs` and platform env `fab-plain`,
    each holding records, an audit event and a file."""
    tenants.create_tenant(rt, "fab", byok=True)
    byok.generate(rt, "fab", "k1", out=tmp_path / "k1.pfx", password=PW)
    byok.activate(rt, "fab", "k1")
    ids = {}
    for name in envs:
        ids[name] = environments.create_environment(rt, "fab", name, env_type="sandbox", byok=True)["id"]
    ids["fab-plain"] = environments.create_environment(rt, "fab", "fab-plain", env_type="sandbox")["id"]
    for eid in ids.values():
        put_rows(rt, eid, 5)
        data = EnvironmentData(rt, eid)
        data.audit.append({"who": "bob"})
        data.files.put("dir/f.bin", b"\x02" * 5000)
    return ids


def _content(rt: Any, env_id: str) -> Any:
    data = EnvironmentData(rt, env_id)
    events = [(e["event"] if isinstance(e, dict) and "event" in e else e) for e in data.audit.query()]
    return read_all(rt, env_id), events, data.files.get("dir/f.bin")


def _tenant(rt: Any) -> Tenant:
    with rt.transaction() as s:
        t = s.scalars(select(Tenant).where(Tenant.name == "fab")).one()
        s.expunge(t)
        return t


def _run_jobs(rt: Any, job_ids: list[str]) -> None:
    for jid in job_ids:
        assert Worker(rt, poll_seconds=0.01).run_job(jid) == "succeeded", jid


def _big_file(tmp_path: Any) -> str:
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(BIG)  # sparse: reads as zeros
    return str(path)


def test_tenant_lock_ends_when_the_last_locked_environment_is_deleted(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    """Lock, unlock one environment, let maintenance delete the other after 28 days: the tenant lock
    ends (env create works again, audited) — it used to stay locked with `byok unlock` saying
    not_locked."""
    ids = _byok_tenant(rt, tmp_path)
    cli = Cli(home, db_url, clock)
    k1 = str(tmp_path / "k1.pfx")
    clock.advance(hours=72)
    cli("byok", "lock", "fab", "--file", k1, "--password", PW, "--confirm", "fab")
    t_lock = clock.now()
    assert cli("env", "create", "fab", "new-env", code=4)["code"] == "tenant_locked"
    cli("byok", "key", "import", "fab", "--name", "k1-again", "--file", k1, "--password", PW)
    cli("byok", "key", "activate", "fab", "k1-again")
    out = cli("byok", "unlock", "fab", "fab-prod")
    assert out["still_locked"] == 1 and out["tenant_locked"] is True

    clock.set(t_lock + timedelta(days=28))
    run = cli("maintenance", "run")
    assert run["deletions"]["deleted"] == [ids["fab-sbx"]]
    assert env_row(rt, ids["fab-sbx"]).state == "deleted"
    assert _tenant(rt).locked_at is None
    assert ("tenant.lock_ended", "ok") in [(a, o) for a, o, _ in audit_actions(rt, _tenant(rt).id)]
    assert cli("tenant", "show", "fab")["locked_at"] is None
    assert cli("env", "create", "fab", "new-env")["state"] == "enabled"
    assert cli("byok", "unlock", "fab", code=4)["code"] == "not_locked"  # nothing left to unlock
    assert env_row(rt, ids["fab-prod"]).state == "enabled"  # the unlocked one was never touched


def test_a_lock_left_without_locked_environments_is_released(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    """A tenant still marked locked with no locked environment (left by older versions): `byok
    unlock T` releases it (it said not_locked), and so does the next maintenance run."""
    _byok_tenant(rt, tmp_path, envs=())
    cli = Cli(home, db_url, clock)
    for release in (("byok", "unlock", "fab"), ("maintenance", "run")):
        with rt.transaction() as s:
            s.scalars(select(Tenant).where(Tenant.name == "fab")).one().locked_at = clock.now()
        assert cli("env", "create", "fab", f"e-{len(release)}", code=4)["code"] == "tenant_locked"
        cli(*release)
        assert _tenant(rt).locked_at is None, release
        assert cli("env", "create", "fab", f"e-{len(release)}")["state"] == "enabled"


def test_reverting_the_last_byok_environment_finalizes_and_moves_stores_out_of_sql(  # type: ignore[no-untyped-def]
    rt, clock, home, db_url, tmp_path
):
    """BYOK flag off, then the last BYOK environment reverted (not migrated): the tenant finalizes
    (restriction lifted, BYOK vault scheduled for deletion 28 days later, audited with the trigger),
    and every environment still in SQL gets a relayout job; after it, audit and files live in the
    document store and file storage, every byte reads back, and a 130 MiB upload is accepted."""
    ids = _byok_tenant(rt, tmp_path, envs=("fab-prod",))
    cli = Cli(home, db_url, clock)
    before = {eid: _content(rt, eid) for eid in ids.values()}
    big = _big_file(tmp_path)
    err = cli("files", "put", "fab-plain", "big.bin", big, code=4)
    assert err["code"] == "file_too_large_for_sql"

    cli("tenant", "byok-flag", "remove", "fab", "--ticket", "OPS-1")
    assert _tenant(rt).sql_restriction is True  # a BYOK environment is left
    out = cli("byok", "revert", "fab-prod")
    assert out["encryption"]["mode"] == "platform" and out["tenant_finalized"] is True
    t = _tenant(rt)
    assert t.sql_restriction is False and t.final_byok_migration_at is not None
    shown = cli("tenant", "show", "fab")
    assert shown["byok_vault"]["state"] == "scheduled_deletion"
    assert shown["byok_vault"]["delete_after"] == iso_z(clock.now() + timedelta(days=28))
    final = [r for a, o, r in audit_actions(rt, t.id) if a == "tenant.byok_finalized"]
    assert len(final) == 1 and "reverted" in (final[0] or "")

    jobs = [j for j in cli("job", "list") if j["kind"] == "relayout"]
    assert sorted((j["environment"]["id"], j["environment"]["name"]) for j in jobs) == sorted(
        (eid, name) for name, eid in ids.items()
    )
    _run_jobs(rt, [j["id"] for j in jobs])
    for eid in ids.values():
        view = cli("env", "show", eid)
        assert view["sql_restriction"] is False
        assert view["stores"] == {"records": "sql", "audit": "document", "files": "file_storage"}
        assert _content(rt, eid) == before[eid]  # every record, event and file, byte for byte
    from sqlalchemy import func

    from keyshift.db.models import DataAuditRow, DataFile

    with rt.transaction() as s:  # the SQL copies are gone
        assert s.scalar(select(func.count()).select_from(DataAuditRow)) == 0
        assert s.scalar(select(func.count()).select_from(DataFile)) == 0
    put = cli("files", "put", "fab-plain", "big.bin", big)
    assert put["size"] == BIG and put["store"] == "file_storage"
    assert cli("env", "feature", "enable", "fab-plain", "search")["features"] == ["search"]


def test_deleting_the_last_byok_environment_finalizes(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    """`env delete` of the last BYOK environment of a BYOK-off tenant finalizes the tenant; the
    deletion crypto-shreds (every DEK and wrap destroyed, data gone from every store)."""
    from sqlalchemy import func

    from keyshift.db.models import DataAuditRow, DataFile, DataRecord, Dek, DekWrap

    ids = _byok_tenant(rt, tmp_path, envs=("fab-prod",))
    cli = Cli(home, db_url, clock)
    cli("tenant", "byok-flag", "remove", "fab", "--ticket", "OPS-1")
    out = cli("env", "delete", "fab-prod", "--confirm", "fab-prod")
    assert out["state"] == "deleted" and out["tenant_finalized"] is True
    assert env_row(rt, ids["fab-prod"]).state == "deleted"
    t = _tenant(rt)
    assert t.sql_restriction is False
    final = [r for a, o, r in audit_actions(rt, t.id) if a == "tenant.byok_finalized"]
    assert len(final) == 1 and "deleted" in (final[0] or "")
    eid = ids["fab-prod"]
    with rt.transaction() as s:
        for model in (DataRecord, DataAuditRow, DataFile):
            assert s.scalar(select(func.count()).select_from(model).where(model.environment_id == eid)) == 0
        deks = s.execute(select(Dek.state).where(Dek.environment_id == eid)).scalars().all()
        assert deks and set(deks) == {"destroyed"}
        wraps = s.execute(
            select(DekWrap.state, DekWrap.wrapped)
            .join(Dek, Dek.id == DekWrap.dek_id)
            .where(Dek.environment_id == eid)
        ).all()
        assert wraps and all(st == "destroyed" and bytes(w) == b"" for st, w in wraps)
    jobs = [j for j in cli("job", "list") if j["kind"] == "relayout"]
    assert [j["environment"] for j in jobs] == [{"id": ids["fab-plain"], "name": "fab-plain"}]
    assert ("environment.delete", "ok") in [(a, o) for a, o, _ in audit_actions(rt, eid)]


def test_flag_removed_after_every_byok_environment_left_finalizes(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    """Reverted while the flag was still on (no finalization yet), flag turned off afterwards: the
    tenant finalizes then (it used to stay restricted for ever)."""
    _byok_tenant(rt, tmp_path, envs=("fab-prod",))
    cli = Cli(home, db_url, clock)
    cli("byok", "revert", "fab-prod")
    assert _tenant(rt).sql_restriction is True  # the BYOK feature is still on
    out = cli("tenant", "byok-flag", "remove", "fab", "--ticket", "OPS-2")
    assert out["sql_restriction"] is False and out["final_byok_migration_at"] is not None


def test_env_delete_refusals_change_nothing(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    ids = _byok_tenant(rt, tmp_path, envs=("fab-prod",))
    cli = Cli(home, db_url, clock)
    from keyshift.db.models import Job

    with rt.transaction() as s:  # a job holding the environment (as a running migration would)
        from keyshift.jobs import store

        store.create_job(rt, s, "link", environment_id=ids["fab-plain"], tenant_id=_tenant(rt).id)
    state0 = snapshot(rt)
    cases = [
        (("env", "delete", "fab-prod"), 2, "confirmation_required"),
        (("env", "delete", "fab-prod", "--confirm", "fab-sbx"), 2, "confirmation_mismatch"),
        (("env", "delete", "nope", "--confirm", "nope"), 3, "environment_not_found"),
        (("env", "delete", "fab-plain", "--confirm", "fab-plain"), 4, "job_running"),
    ]
    for args, code, err_code in cases:
        assert cli(*args, code=code)["code"] == err_code, args
    assert snapshot(rt) == state0
    assert _content(rt, ids["fab-prod"])[0]  # still readable
    refused = [o for a, o, _ in audit_actions(rt) if a == "environment.delete"]
    assert refused == ["error"] * 4  # every refusal is audited
    cli("env", "delete", "fab-prod", "--confirm", "fab-prod")
    assert cli("env", "delete", "fab-prod", "--confirm", "fab-prod", code=4)["code"] == "environment_deleted"
    with rt.transaction() as s:
        assert s.scalars(select(Job.state)).all() == ["pending"]
