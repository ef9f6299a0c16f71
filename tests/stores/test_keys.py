"""DEK lifecycle: lazy creation under the env's KEK, cache-bounded vault calls, usage budget and
rolling, vault errors naming the environment, flush, rewrap of a whole environment."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from keyshift.control import vaults as vault_admin
from keyshift.db.models import AdminAuditEvent, Dek, DekWrap, Environment
from keyshift.errors import EnvironmentUnavailableError, KeyInaccessibleError
from keyshift.runtime import Runtime
from keyshift.stores import keys
from keyshift.stores.envstate import env_states
from keyshift.stores.records import RecordStore
from stores.helpers import count_vault_calls, make_env, set_env


def _deks(rt: Runtime, env_id: str) -> list[Dek]:
    with rt.transaction() as s:
        return list(s.scalars(select(Dek).where(Dek.environment_id == env_id).order_by(Dek.created_at)))


def _wraps(rt: Runtime, dek_id: str) -> list[DekWrap]:
    with rt.transaction() as s:
        return list(s.scalars(select(DekWrap).where(DekWrap.dek_id == dek_id).order_by(DekWrap.id)))


def test_dek_created_lazily_on_first_write_and_wrapped_by_the_env_kek(rt: Runtime) -> None:
    env_id = make_env(rt)
    assert _deks(rt, env_id) == []
    store = RecordStore(rt, env_id)
    store.put("t", "r", 1)
    [dek] = _deks(rt, env_id)
    assert dek.store == "records" and dek.state == "active" and dek.encryptions >= 1
    [wrap] = _wraps(rt, dek.id)
    assert wrap.state == "current"
    assert wrap.key_name == rt.settings.platform_key
    assert wrap.identity == rt.settings.platform_identity
    with rt.transaction() as s:
        actions = list(s.scalars(select(AdminAuditEvent.action).where(AdminAuditEvent.target_id == env_id)))
    assert "dek.create" in actions
    store.put("t", "r2", 2)
    assert len(_deks(rt, env_id)) == 1  # the same DEK keeps encrypting


def test_ten_thousand_records_make_a_handful_of_vault_calls(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    counters = count_vault_calls(rt, monkeypatch)
    env_id = make_env(rt)
    store = RecordStore(rt, env_id)
    # 10,000 records: 9,900 in batches, 100 one by one, then every one of them read back.
    for start in range(0, 9900, 990):
        store.put_many("t", [(f"r{i:05d}", {"i": i}) for i in range(start, start + 990)])
    for i in range(100):
        store.put("t", f"s{i:03d}", {"i": i})
    assert store.get("t", "r00042") == {"i": 42}
    seen = [r.value["i"] for r in store.iter_all("t", page=1000)]
    assert len(seen) == 10_000 and sum(seen) == sum(range(9900)) + sum(range(100))
    calls = sum(sum(c.calls.values()) for c in counters.values())
    assert 1 <= calls <= 3, counters
    # A fresh process (runtime) unwraps once, then serves from its cache.
    keys.flush(rt, env_id)
    store.get("t", "r00001")
    store.get("t", "r00002")
    assert sum(sum(c.calls.values()) for c in counters.values()) == calls + 1


def test_cache_max_age_bounds_how_long_an_unwrapped_key_lives(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, clock: object
) -> None:
    counters = count_vault_calls(rt, monkeypatch)
    env_id = make_env(rt)
    store = RecordStore(rt, env_id)
    store.put("t", "r", 1)
    before = sum(c.calls["unwrap"] for c in counters.values())
    clock.advance(seconds=rt.settings.dek_cache_max_age_seconds + 1)  # type: ignore[attr-defined]
    assert store.get("t", "r") == 1
    assert sum(c.calls["unwrap"] for c in counters.values()) == before + 1


def test_usage_budget_rolls_to_a_new_dek_and_old_records_stay_readable(rt: Runtime) -> None:
    env_id = make_env(rt)
    dk = keys.data_keys(rt)
    dk.limit = 300
    dk.max_block = 64
    store = RecordStore(rt, env_id)
    store.put_many("t", [(f"r{i:04d}", i) for i in range(1000)])
    deks = _deks(rt, env_id)
    assert len(deks) >= 4
    assert all(d.encryptions <= 300 for d in deks)
    assert sum(d.state == "active" for d in deks) == 1
    assert [r.value for r in store.iter_all("t")] == list(range(1000))


def test_budget_is_reserved_in_the_database_in_small_first_blocks(rt: Runtime) -> None:
    env_id = make_env(rt)
    store = RecordStore(rt, env_id)
    for i in range(3):
        store.put("t", f"r{i}", i)
    [dek] = _deks(rt, env_id)
    assert dek.encryptions >= 3  # the first block is small (64) so short-lived processes waste little
    assert dek.encryptions <= 64 * 4


def test_disabled_key_fails_closed_naming_the_environment(fresh_rt: Runtime) -> None:
    """A vault refusal (key disabled) fails the request naming the environment (exit 6); the data
    plane itself never changes state. Wired to the control plane (as every interface's runtime
    is), the refusal is confirmed on a fresh connection and the environment is disabled: exit 7."""
    from keyshift.control.key_events import wire

    rt = fresh_rt
    env_id = make_env(rt, "contoso-prod")
    store = RecordStore(rt, env_id)
    store.put("t", "r", {"v": 1})
    vault_admin.set_key_enabled(rt, rt.settings.platform_vault, rt.settings.platform_key, False, force=True)
    keys.flush(rt, env_id)
    with pytest.raises(KeyInaccessibleError) as err:
        store.get("t", "r")
    assert "contoso-prod" in err.value.message and err.value.exit_code == 6
    with rt.transaction() as s:
        assert s.get(Environment, env_id).state == "enabled"  # type: ignore[union-attr]
    wire(rt)
    with pytest.raises(EnvironmentUnavailableError) as err2:
        store.get("t", "r")
    assert "contoso-prod" in err2.value.message and err2.value.exit_code == 7
    with rt.transaction() as s:
        assert s.get(Environment, env_id).state == "disabled"  # type: ignore[union-attr]
    vault_admin.set_key_enabled(rt, rt.settings.platform_vault, rt.settings.platform_key, True)
    set_env(rt, env_id, state="enabled")
    env_states(rt).invalidate(env_id)
    assert store.get("t", "r") == {"v": 1}


def test_revoked_grant_refuses_a_new_dek(fresh_rt: Runtime) -> None:
    rt = fresh_rt
    env_id = make_env(rt, "contoso-dev")
    vault_admin.revoke_key_grant(
        rt, rt.settings.platform_vault, rt.settings.platform_key, rt.settings.platform_identity, force=True
    )
    with pytest.raises((KeyInaccessibleError, EnvironmentUnavailableError)) as err:
        RecordStore(rt, env_id).put("t", "r", 1)
    assert "contoso-dev" in err.value.message
    assert _deks(rt, env_id) == []


def test_rewrap_environment_moves_every_dek_to_the_target_kek(fresh_rt: Runtime) -> None:
    rt = fresh_rt
    env_id = make_env(rt)
    store = RecordStore(rt, env_id)
    store.put_many("t", [(f"r{i}", i) for i in range(20)])
    vault_admin.create_local_vault(rt, "customer", soft_delete_days=90, purge_protection=True)
    vault_admin.create_key(rt, "customer", "cmk", "RSA", 2048)
    vault_admin.grant_key(rt, "customer", "cmk", "pol-1", "get,wrapKey,unwrapKey")
    with rt.transaction() as s:
        from keyshift.db.models import VaultRecord

        vid = s.scalars(select(VaultRecord.id).where(VaultRecord.name == "customer")).one()
    target = keys.KekTarget(vid, "cmk", "pol-1")
    summary = keys.rewrap_environment(
        rt, env_id, target, retain_until=rt.clock.now(), binding={"enc_mode": "byok"}
    )
    assert summary["deks"] == 1
    [dek] = _deks(rt, env_id)
    wraps = _wraps(rt, dek.id)
    assert [w.state for w in wraps] == ["retained", "current"]
    assert wraps[1].vault_id == vid and wraps[1].identity == "pol-1"
    with rt.transaction() as s:
        env = s.get(Environment, env_id)
        assert env is not None
        assert (env.kek_vault_id, env.kek_key_name, env.kek_identity, env.enc_mode) == (
            vid,
            "cmk",
            "pol-1",
            "byok",
        )
    # A fresh cache must unwrap under the new KEK: revoke the platform identity to prove it.
    keys.flush(rt, env_id)
    vault_admin.revoke_key_grant(
        rt, rt.settings.platform_vault, rt.settings.platform_key, rt.settings.platform_identity, force=True
    )
    assert [r.value for r in store.iter_all("t")] == sorted(range(20), key=lambda i: f"r{i}")
    # New DEKs (another store) are wrapped under the new binding too.
    env_states(rt).invalidate(env_id)
    keys.rewrap_environment(rt, env_id, target, old_wraps="destroyed")
    wraps = _wraps(rt, dek.id)
    assert [w.state for w in wraps] == ["retained", "destroyed", "current"]
    assert wraps[1].wrapped == b""


@pytest.mark.parametrize(("bound", "value"), [("dek_cache_max_uses", 5), ("dek_cache_max_bytes", 2000)])
def test_cache_use_and_byte_bounds_force_a_fresh_unwrap(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, bound: str, value: int
) -> None:
    rt.settings = rt.settings.model_copy(update={bound: value})  # before the runtime's cache exists
    counters = count_vault_calls(rt, monkeypatch)
    env_id = make_env(rt)
    store = RecordStore(rt, env_id)
    store.put("t", "r", {"pad": "x" * 500})
    for _ in range(12):
        assert store.get("t", "r") == {"pad": "x" * 500}
    unwraps = sum(c.calls["unwrap"] for c in counters.values())
    assert unwraps >= 2  # the bound evicted the key at least once and it was unwrapped again
    assert unwraps <= 6


def test_a_dek_retired_elsewhere_stops_taking_writes_within_the_refresh_bound(rt: Runtime) -> None:
    from sqlalchemy import update

    env_id = make_env(rt)
    dk = keys.data_keys(rt)
    now = [1000.0]
    dk.monotonic = lambda: now[0]
    store = RecordStore(rt, env_id)
    store.put("t", "a", 1)
    [old] = _deks(rt, env_id)
    with rt.transaction() as s:  # another process (a re-encrypting migration) retires it
        s.execute(update(Dek).where(Dek.id == old.id).values(state="retired"))
    store.put("t", "b", 2)  # within the bound this process may still use its reserved block
    now[0] += rt.settings.state_refresh_seconds
    store.put("t", "c", 3)
    deks = _deks(rt, env_id)
    assert len(deks) == 2
    [new] = [d for d in deks if d.id != old.id]
    with rt.transaction() as s:
        from keyshift.db.models import DataRecord

        by_id = dict(
            s.execute(
                select(DataRecord.record_id, DataRecord.dek_id).where(DataRecord.environment_id == env_id)
            ).all()
        )
    assert by_id["c"] == new.id and by_id["a"] == old.id
    assert [store.get("t", r) for r in "abc"] == [1, 2, 3]  # retired DEKs still decrypt
