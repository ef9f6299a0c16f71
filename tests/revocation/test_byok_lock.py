"""Legacy BYOK tenant lock / unlock (docs/CONCEPTS.md) through the CLI, and the 28-day deletion of locked
environments."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyshift.control import byok, environments, tenants
from keyshift.errors import EnvironmentUnavailableError
from keyshift.stores.service import EnvironmentData

from .helpers import Cli, audit_actions, env_row, put_rows, read_all, snapshot

PW = "correct horse battery staple 1"


def _byok_tenant(rt, tmp_path):  # type: ignore[no-untyped-def]
    tenants.create_tenant(rt, "fab", byok=True)
    byok.generate(rt, "fab", "k1", out=tmp_path / "k1.pfx", password=PW)
    byok.generate(rt, "fab", "k2", out=tmp_path / "k2.pfx", password=PW)  # available, not active
    byok.activate(rt, "fab", "k1")
    ids = {}
    for name, env_type in (("fab-prod", "production"), ("fab-sbx", "sandbox")):
        ids[name] = environments.create_environment(rt, "fab", name, env_type=env_type, byok=True)["id"]
        put_rows(rt, ids[name], 15)
        data = EnvironmentData(rt, ids[name])
        data.audit.append({"who": "bob"})
        data.files.put("f.bin", b"\x01" * 3000)
    plain = environments.create_environment(rt, "fab", "fab-plain", env_type="sandbox")["id"]
    return ids, plain


def _content(rt, env_id):  # type: ignore[no-untyped-def]
    data = EnvironmentData(rt, env_id)
    return read_all(rt, env_id), [e for e in data.audit.query()], data.files.get("f.bin")


def test_lock_refusals_lock_unlock_and_deletion(rt, clock, home, db_url, tmp_path):  # type: ignore[no-untyped-def]
    ids, plain = _byok_tenant(rt, tmp_path)
    before = {eid: _content(rt, eid) for eid in ids.values()}
    cli = Cli(home, db_url, clock)
    k1 = str(tmp_path / "k1.pfx")
    state0 = snapshot(rt)
    refusals = [
        (("byok", "lock", "fab", "--file", k1, "--password", PW), 2, "confirmation_required"),
        (
            ("byok", "lock", "fab", "--file", k1, "--password", PW, "--confirm", "fab2"),
            2,
            "confirmation_mismatch",
        ),
        (
            ("byok", "lock", "fab", "--file", k1, "--password", "wrong pw!", "--confirm", "fab"),
            2,
            "wrong_password",
        ),
        (
            ("byok", "lock", "fab", "--file", str(tmp_path / "k2.pfx"), "--password", PW, "--confirm", "fab"),
            4,
            "not_active_key",
        ),
        (
            (
                "byok",
                "lock",
                "fab",
                "--file",
                str(tmp_path / "nope.pfx"),
                "--password",
                PW,
                "--confirm",
                "fab",
            ),
            2,
            "file_not_found",
        ),
        (
            ("byok", "lock", "fab", "--file", k1, "--password", PW, "--confirm", "fab"),
            4,
            "key_changed_recently",
        ),
        (("byok", "unlock", "fab"), 4, "not_locked"),
    ]
    for args, code, err_code in refusals:
        assert cli(*args, code=code)["code"] == err_code, args
    assert snapshot(rt) == state0  # nothing changed by any refusal
    assert [o for a, o, _ in audit_actions(rt) if a == "byok.lock"] == ["error"] * 6

    clock.advance(hours=72)  # exactly 72 h after the activation: allowed
    out = cli("byok", "lock", "fab", "--file", k1, "--password", PW, "--confirm", "fab")
    assert sorted(out["environments_locked"]) == sorted(ids.values()) and out["keys_deleted"] == 2
    t_lock = clock.now()
    for eid in ids.values():
        row = env_row(rt, eid)
        assert row.state == "locked" and row.delete_after == t_lock + timedelta(days=28)
        with pytest.raises(EnvironmentUnavailableError) as err:
            EnvironmentData(rt, eid).records.get("t", "r00001")
        assert err.value.code == "environment_locked" and err.value.exit_code == 7
        assert ("environment.lock", "ok") in [(a, o) for a, o, _ in audit_actions(rt, eid)]
    err = cli("data", "get", "fab-prod", "t", "r00001", code=7)
    assert err["code"] == "environment_locked"
    assert env_row(rt, plain).state == "enabled"  # platform-key environments are not BYOK: untouched
    assert [k["state"] for k in byok.list_keys(rt, "fab")] == []  # every BYOK key deleted
    vault = rt.vault("byok-fab")
    assert all(k.deleted for k in vault.list_keys())  # type: ignore[attr-defined]
    assert cli("byok", "lock", "fab", "--file", k1, "--password", PW, "--confirm", "fab", code=4)["code"] in (
        "already_locked",
        "no_active_key",
    )

    # Unlock needs the same key re-imported and activated first.
    state1 = snapshot(rt)
    assert cli("byok", "unlock", "fab", code=4)["code"] == "key_not_reactivated"
    assert snapshot(rt) == state1
    cli("byok", "key", "import", "fab", "--name", "k1-again", "--file", k1, "--password", PW)
    cli("byok", "key", "activate", "fab", "k1-again")
    out = cli("byok", "unlock", "fab", "fab-prod")  # one environment at a time
    assert out["unlocked"] == [ids["fab-prod"]] and out["still_locked"] == 1 and out["tenant_locked"]
    assert _content(rt, ids["fab-prod"]) == before[ids["fab-prod"]]
    assert env_row(rt, ids["fab-prod"]).delete_after is None
    assert env_row(rt, ids["fab-sbx"]).state == "locked"
    out = cli("byok", "unlock", "fab")
    assert out["unlocked"] == [ids["fab-sbx"]] and out["tenant_locked"] is False
    for eid in ids.values():
        assert _content(rt, eid) == before[eid]  # every record, event and file reads back equal
        put_rows(rt, eid, 1, prefix="after")

    # Lock again (72 h after the re-activation) and leave it: maintenance deletes after 28 days.
    clock.advance(hours=73)
    cli("byok", "lock", "fab", "--file", k1, "--password", PW, "--confirm", "fab")
    t_lock = clock.now()
    clock.set(t_lock + timedelta(days=28) - timedelta(seconds=1))
    assert cli("maintenance", "run")["deletions"]["deleted"] == []
    clock.set(t_lock + timedelta(days=28))
    assert sorted(cli("maintenance", "run")["deletions"]["deleted"]) == sorted(ids.values())
    assert all(env_row(rt, e).state == "deleted" for e in ids.values())
    assert env_row(rt, plain).state == "enabled"


def test_unlock_rejects_a_different_key(sqlite_rt, clock, tmp_path):  # type: ignore[no-untyped-def]
    from keyshift.control.byok_lock import lock, unlock
    from keyshift.errors import ConflictError

    rt = sqlite_rt
    _byok_tenant(rt, tmp_path)
    clock.advance(hours=73)
    lock(rt, "fab", file=tmp_path / "k1.pfx", password=PW, confirm="fab")
    byok.import_key(rt, "fab", "k2-again", file=tmp_path / "k2.pfx", password=PW)
    byok.activate(rt, "fab", "k2-again")
    before = snapshot(rt)
    with pytest.raises(ConflictError) as err:
        unlock(rt, "fab")
    assert err.value.code == "key_not_reactivated"
    assert snapshot(rt) == before


def test_process_with_a_stale_view_is_refused_as_locked(sqlite_rt, clock, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Another process still holding an `enabled` snapshot (within state_refresh_seconds) and no
    cached DEK hits the deleted BYOK key: refused with environment_locked, state stays locked."""
    from keyshift.control import key_events
    from keyshift.control.byok_lock import lock
    from keyshift.runtime import Runtime
    from keyshift.stores.keys import data_keys
    from keyshift.stores.records import RecordStore

    calls: list[str] = []

    def spy(failure):  # type: ignore[no-untyped-def]
        calls.append(failure.error.code)
        return key_events.on_key_failure(failure)

    rt = sqlite_rt
    ids, _ = _byok_tenant(rt, tmp_path)
    eid = ids["fab-prod"]
    other = Runtime.open(home=rt.home.path, clock=clock, principal="service:other")
    data_keys(other).on_key_failure.append(spy)  # the handler the runtime's opener wires, spied on
    other.settings = other.settings.model_copy(update={"state_refresh_seconds": 60.0})
    try:
        assert len(read_all(other, eid)) == 15  # snapshot taken: enabled
        clock.advance(hours=73)
        lock(rt, "fab", file=tmp_path / "k1.pfx", password=PW, confirm="fab")
        data_keys(other).flush(eid)  # its cached DEK aged out
        with pytest.raises(EnvironmentUnavailableError) as err:
            RecordStore(other, eid).get("t", "r00001")
        assert err.value.code == "environment_locked"
        assert calls == ["key_deleted"]  # refused by the vault, mapped by the revocation hook
        assert env_row(rt, eid).state == "locked"
    finally:
        other.close()
