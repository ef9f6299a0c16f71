"""The record hot path keeps every check, on SQLite and PostgreSQL.

Each test first warms the hot path (statements, hot DEK, environment snapshot, AD prefix) with a
good read, then proves the warm path still refuses: a disabled environment, a tampered or moved
ciphertext, a stale version, an out-of-range version. Plus: SQLite reads never wait for the write
lock, a PostgreSQL connection the server dropped is replaced (or retried once) without error and
without applying a write twice, a revoked (flushed) DEK is unwrapped again, `scan` without a
limit yields the whole table page by page, and a large `put_many` streams in chunks.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update

import keyshift.db.direct as direct_mod
import keyshift.stores.records as records_mod
from keyshift.control.revocation import disable_environment
from keyshift.db.models import DataRecord
from keyshift.errors import (
    ConflictError,
    EnvironmentUnavailableError,
    IntegrityError,
    UsageError,
)
from keyshift.runtime import Runtime
from keyshift.stores.envstate import env_states
from keyshift.stores.keys import data_keys, flush
from keyshift.stores.records import RecordStore
from keyshift.stores.records_sql import record_sql
from stores.helpers import count_vault_calls, make_env, set_env, snapshot


@pytest.fixture
def store(rt: Runtime) -> RecordStore:
    s = RecordStore(rt, make_env(rt))
    s.put("t", "a", {"v": "a"})
    s.put("t", "b", {"v": "b"})
    assert s.get("t", "a") == {"v": "a"}  # warm: statements, hot DEK, snapshot, AD prefix
    return s


def _blob(rt: Runtime, env_id: str, table: str, rid: str) -> bytes:
    with rt.transaction() as s:
        return bytes(
            s.scalars(
                select(DataRecord.value).where(
                    DataRecord.environment_id == env_id,
                    DataRecord.table_name == table,
                    DataRecord.record_id == rid,
                )
            ).one()
        )


def _set_blob(rt: Runtime, env_id: str, table: str, rid: str, blob: bytes) -> None:
    with rt.transaction() as s:
        s.execute(
            update(DataRecord)
            .where(
                DataRecord.environment_id == env_id,
                DataRecord.table_name == table,
                DataRecord.record_id == rid,
            )
            .values(value=blob)
        )


# -- fail closed ------------------------------------------------------------------------------
def test_warm_path_refuses_an_environment_disabled_elsewhere(rt: Runtime, store: RecordStore) -> None:
    now = [1000.0]
    env_states(rt).monotonic = lambda: now[0]
    env_states(rt).invalidate()
    assert store.get("t", "a") == {"v": "a"}  # snapshot read at now=1000
    set_env(rt, store.env_id, state="disabled")  # another process disables it
    now[0] += rt.settings.state_refresh_seconds  # the refresh bound passes
    for call in (
        lambda: store.get("t", "a"),
        lambda: store.get_record("t", "a"),
        lambda: store.get_many("t", ["a", "b"]),
        lambda: list(store.scan("t")),
        lambda: store.scan("t", limit=10),
        lambda: store.put("t", "c", 1),
        lambda: store.put_many("t", [("c", 1)]),
        lambda: store.delete("t", "a"),
    ):
        with pytest.raises(EnvironmentUnavailableError) as err:
            call()
        assert err.value.code == "environment_disabled"
    assert not data_keys(rt)._hot  # its hot DEKs were dropped when the refresh saw the state


def test_warm_path_refuses_at_once_an_environment_disabled_here(rt: Runtime, store: RecordStore) -> None:
    disable_environment(rt, store.env_id, "test", source="test")
    with pytest.raises(EnvironmentUnavailableError):
        store.get("t", "a")
    with pytest.raises(EnvironmentUnavailableError):
        store.put("t", "a", 1)


def test_warm_path_refuses_a_tampered_ciphertext(rt: Runtime, store: RecordStore) -> None:
    blob = bytearray(_blob(rt, store.env_id, "t", "a"))
    blob[-1] ^= 1  # the tag
    _set_blob(rt, store.env_id, "t", "a", bytes(blob))
    for call in (
        lambda: store.get("t", "a"),
        lambda: store.get_record("t", "a"),
        lambda: store.get_many("t", ["a"]),
        lambda: list(store.scan("t")),
    ):
        with pytest.raises(IntegrityError, match="failed authentication"):
            call()
    header = bytearray(_blob(rt, store.env_id, "t", "b"))
    header[25] ^= 1  # a nonce byte
    _set_blob(rt, store.env_id, "t", "b", bytes(header))
    with pytest.raises(IntegrityError):
        store.get("t", "b")
    _set_blob(rt, store.env_id, "t", "b", b"KS")  # truncated
    with pytest.raises(IntegrityError):
        store.get("t", "b")


def test_warm_path_refuses_a_moved_ciphertext(rt: Runtime, store: RecordStore) -> None:
    store.put("u", "a", {"v": "other table"})
    other = RecordStore(rt, make_env(rt))
    other.put("t", "a", {"v": "other env"})
    assert store.get("u", "a") == {"v": "other table"} and other.get("t", "a") == {"v": "other env"}
    good = _blob(rt, store.env_id, "t", "a")
    _set_blob(rt, store.env_id, "t", "b", good)  # another record of the same table
    with pytest.raises(IntegrityError):
        store.get("t", "b")
    for bulk in (  # the bulk readers pass fetched rows straight to the decryptor: same check
        lambda: list(store.scan("t")),
        lambda: store.scan("t", limit=10),
        lambda: store.get_many("t", ["a", "b"]),
        lambda: list(store.iter_all("t")),
    ):
        with pytest.raises(IntegrityError, match=r"t/b .*failed authentication"):
            bulk()
    _set_blob(rt, store.env_id, "u", "a", good)  # the same id in another table
    with pytest.raises(IntegrityError):
        store.get("u", "a")
    _set_blob(rt, other.env_id, "t", "a", good)  # the same table and id in another environment
    with pytest.raises(IntegrityError):
        other.get("t", "a")
    assert store.get("t", "a") == {"v": "a"}  # the original still reads


def test_warm_path_refuses_a_stale_version_and_leaves_state_unchanged(
    rt: Runtime, store: RecordStore
) -> None:
    assert store.put("t", "a", {"v": 2}) == 2
    before = snapshot(rt, "data_records", env_id=store.env_id)
    for call in (
        lambda: store.put("t", "a", {"v": "lost"}, expected_version=1),
        lambda: store.put("t", "a", {"v": "lost"}, expected_version=0),
        lambda: store.delete("t", "a", expected_version=1),
        lambda: store.put("t", "a", {"v": "lost"}, expected_version=(1 << 63) - 1),
    ):
        with pytest.raises(ConflictError) as err:
            call()
        assert err.value.code == "version_conflict"
    assert store.put_many_if_versions("t", [("a", {"v": "lost"}, 1)]) == []
    assert snapshot(rt, "data_records", env_id=store.env_id) == before
    assert store.put("t", "a", {"v": 3}, expected_version=2) == 3
    store.delete("t", "a", expected_version=3)


@pytest.mark.parametrize("version", [1 << 63, 1 << 64, -1, True, 1.0, "1"])
def test_an_out_of_range_expected_version_is_a_usage_error(
    rt: Runtime, store: RecordStore, version: Any
) -> None:
    before = snapshot(rt, "data_records", env_id=store.env_id)
    for call in (
        lambda: store.put("t", "a", 1, expected_version=version),
        lambda: store.delete("t", "a", expected_version=version),
        lambda: store.put_many_if_versions("t", [("a", 1, version)]),
    ):
        with pytest.raises(UsageError) as err:
            call()
        assert err.value.code == "invalid_version" and err.value.exit_code == 2
    assert snapshot(rt, "data_records", env_id=store.env_id) == before


# -- locking and connections ------------------------------------------------------------------
def test_sqlite_reads_never_wait_for_the_write_lock(rt: Runtime, store: RecordStore) -> None:
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite locking")
    # The environment snapshot is read again under the lock too. (A DEK unwrap is a key operation
    # that writes its audit record, so it is a writer: the hot DEK stays warm here.)
    env_states(rt).invalidate()
    holder = sqlite3.connect(rt.engine.url.database or "", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        start = time.monotonic()
        assert store.get("t", "a") == {"v": "a"}
        assert [r.id for r in store.scan("t")] == ["a", "b"]
        assert [r.id for r in store.get_many("t", ["a", "b"])] == ["a", "b"]
        assert store.tables() == [{"table": "t", "records": 2}]
        assert time.monotonic() - start < 2.0  # a writer's transaction would wait up to 30 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _direct_pids(rt: Runtime) -> list[int]:
    idle = record_sql(rt).db._idle
    return [c.info.backend_pid for c, _ in idle if not c.closed]


def _kill(rt: Runtime, pids: list[int]) -> None:
    admin = create_engine(rt.engine.url)
    with admin.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    admin.dispose()
    time.sleep(0.2)


@pytest.mark.parametrize("check_idle", [True, False])
def test_postgres_dropped_connection_recovers_without_error(
    rt: Runtime, store: RecordStore, monkeypatch: pytest.MonkeyPatch, check_idle: bool
) -> None:
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections")
    if check_idle:  # every idle connection's socket is polled before use
        monkeypatch.setattr(direct_mod, "IDLE_CHECK_AFTER", 0.0)
    else:  # no idle check: the statement meets the dead connection and is retried
        monkeypatch.setattr(direct_mod, "pg_alive", lambda conn: True)
    pids = _direct_pids(rt)
    assert pids
    _kill(rt, pids)
    assert store.get("t", "a") == {"v": "a"}
    assert _direct_pids(rt) and not set(_direct_pids(rt)) & set(pids)
    _kill(rt, _direct_pids(rt))
    assert store.put("t", "a", {"v": "again"}) == 2  # applied exactly once
    assert store.get_record("t", "a").version == 2
    _kill(rt, _direct_pids(rt))
    assert store.put("t", "a", {"v": 3}, expected_version=2) == 3  # a CAS is not applied twice
    _kill(rt, _direct_pids(rt))
    assert [r.id for r in store.get_many("t", [f"x{i}" for i in range(600)] + ["a"])] == ["a"]


def test_postgres_idle_poll_only_after_the_connection_sat_idle(
    rt: Runtime, store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections")
    polls: list[int] = []
    real = direct_mod.pg_alive
    monkeypatch.setattr(direct_mod, "pg_alive", lambda conn: polls.append(1) or real(conn))
    monkeypatch.setattr(direct_mod, "IDLE_CHECK_AFTER", 3600.0)
    for _ in range(5):  # back to back: the connection was idle for microseconds
        assert store.get("t", "a") == {"v": "a"}
    assert polls == []
    monkeypatch.setattr(direct_mod, "IDLE_CHECK_AFTER", 0.0)
    assert store.get("t", "a") == {"v": "a"}
    assert polls == [1]


def test_postgres_pooled_connection_dropped_is_replaced_on_checkout(rt: Runtime, store: RecordStore) -> None:
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections")
    with rt.transaction() as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
    _kill(rt, [pid])
    with rt.transaction() as s:  # no pre-ping round trip, yet no error
        assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


# -- hot DEKs ---------------------------------------------------------------------------------
def test_a_flushed_hot_dek_is_unwrapped_again(
    rt: Runtime, store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counters = count_vault_calls(rt, monkeypatch)
    for _ in range(5):
        assert store.get("t", "a") == {"v": "a"}
    assert sum(c.calls["unwrap"] for c in counters.values()) == 0  # served hot
    flush(rt, store.env_id)  # revocation in this process
    assert store.get("t", "a") == {"v": "a"}
    assert sum(c.calls["unwrap"] for c in counters.values()) == 1


def test_hot_dek_uses_are_reported_to_the_cache(rt: Runtime, store: RecordStore) -> None:
    dk = data_keys(rt)
    for _ in range(10):
        store.get("t", "a")
    flush_uses_before = {k: len(h.sizes) for k, h in dk._hot.items()}
    assert sum(flush_uses_before.values()) >= 10
    [(env_id, _, dek_id)] = [k for k in dk._hot if k[0] == store.env_id]
    before = dk.cache._entries[(env_id, dek_id)].uses
    now = [dk.monotonic() + 10_000]
    dk.monotonic = lambda: now[0]  # past the hot key's deadline: the next read renews it
    store.get("t", "a")
    entry = dk.cache._entries[(env_id, dek_id)]
    assert entry.uses >= before + 10 and entry.nbytes >= 10 * len(b'J{"v":"a"}')


# -- scan and put_many ------------------------------------------------------------------------
def test_scan_without_limit_yields_the_whole_table_page_by_page(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RecordStore(rt, make_env(rt))
    store.put_many("big", [(f"r{i:05d}", {"i": i}) for i in range(2500)])
    got = [r.id for r in store.scan("big")]
    assert got == [f"r{i:05d}" for i in range(2500)]  # past the old silent 1,000 cut
    assert [r.id for r in store.scan("big", after="r02400")] == [f"r{i:05d}" for i in range(2401, 2500)]
    monkeypatch.setattr(records_mod, "SCAN_PAGE", 100)
    pages: list[int] = []
    real = store._page
    monkeypatch.setattr(store, "_page", lambda t, a, n: pages.append(n) or real(t, a, n))
    it = store.scan("big")
    assert len(pages) == 1  # the first page is read at once (errors surface at the call)
    assert next(it).id == "r00000"
    assert sum(1 for _ in it) == 2499
    assert len(pages) == 26  # 25 full pages and the empty one that ends it


def test_large_put_many_streams_in_chunks(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RecordStore(rt, make_env(rt))
    monkeypatch.setattr(records_mod, "PUT_CHUNK", 100)
    writes: list[int] = []
    sql = record_sql(rt)
    real = sql.write
    monkeypatch.setattr(sql, "write", lambda work, hooks, rt_: writes.append(1) or real(work, hooks, rt_))
    assert store.put_many("t", ((f"r{i:04d}", {"i": i}) for i in range(350))) == 350
    assert len(writes) == 4
    assert [r.value["i"] for r in store.scan("t")] == list(range(350))
    bad = [(f"s{i:04d}", {"i": i}) for i in range(350)] + [("bad/id", 1)]
    before = snapshot(rt, "data_records", env_id=store.env_id)
    with pytest.raises(UsageError):
        store.put_many("t", bad)  # a list is checked whole first: nothing written
    assert snapshot(rt, "data_records", env_id=store.env_id) == before


def test_record_times_read_back_as_the_clock_wrote_them(rt: Runtime, store: RecordStore) -> None:
    from datetime import UTC, timedelta

    rt.clock.advance(seconds=90.25)  # type: ignore[attr-defined]
    store.put("t", "c", 1)
    when = rt.clock.now()
    with rt.transaction() as s:  # what the ORM reads from the same row
        orm = s.scalars(
            select(DataRecord.updated_at).where(
                DataRecord.environment_id == store.env_id, DataRecord.record_id == "c"
            )
        ).one()
    for rec in (
        store.get_record("t", "c"),
        next(r for r in store.scan("t") if r.id == "c"),
        store.get_many("t", ["c"])[0],
        store.scan("t", after="b", limit=1)[0],
    ):
        assert rec.updated_at == when == orm
        assert rec.updated_at.utcoffset() == timedelta(0) and rec.updated_at.tzinfo is not None
        assert rec.to_dict()["updated_at"] == when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_postgres_direct_connections_read_times_in_utc(rt: Runtime, store: RecordStore) -> None:
    """The direct connections run with the session time zone UTC, so psycopg hands out times
    whose tzinfo is datetime.UTC itself and a scan converts none of them."""
    from datetime import UTC

    if rt.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL session time zone")
    sql = record_sql(rt)
    assert sql.fetch("SHOW TimeZone", ()) == [("UTC",)]
    raw = sql.fetch(sql.scan_first, (store.env_id, "t", 10))
    assert [r[3].tzinfo for r in raw] == [UTC, UTC]
    assert [r.updated_at.tzinfo for r in store.scan("t")] == [UTC, UTC]


def test_bulk_reads_decode_json_and_bytes_values_alike(rt: Runtime, store: RecordStore) -> None:
    values: dict[str, Any] = {
        "j1": {"name": "Fabrikam", "n": [1, 2.5, None, True]},
        "j2": "日本語 ✓",
        "b1": b"\x00\x01binary\xff",
        "b2": b"",
        "j3": None,
    }
    store.put_many("mixed", list(values.items()))
    expected = [(rid, values[rid]) for rid in sorted(values)]
    assert [(r.id, r.value) for r in store.scan("mixed")] == expected
    assert [(r.id, r.value) for r in store.get_many("mixed", list(values))] == expected
    assert [(rid, store.get("mixed", rid)) for rid in sorted(values)] == expected
