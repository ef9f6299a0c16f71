"""Re-encrypting migrations at scale: vault calls O(data keys) whatever the row count (counted by a
counting vault wrapper), key-range batches an index serves with planner statistics absent, the
plaintext bytes carried without a JSON round trip, chunk sizes that adapt, several workers."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text, update

from keyshift.db.models import DataRecord, Dek, JobBatch
from keyshift.jobs import store as job_store
from keyshift.migrate import reencrypt
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores import record_batches
from keyshift.stores.envstate import env_states
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore

from .helpers import customer_key, job, make_env, make_policy, make_tenant, records, run


def _world(rt: Runtime, rows: int, *, deks: int = 2) -> str:
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "prod")
    vault, key = customer_key(rt)
    make_policy(rt, "contoso", "pol1", vault, key)
    store = RecordStore(rt, env_id)
    per = rows // deks
    for d in range(deks):  # `deks` records DEKs, each under a share of the rows
        store.put_many("t", [(f"r{i:06d}", {"n": i, "pad": "x" * 40}) for i in range(d * per, (d + 1) * per)])
        if d < deks - 1:
            env = env_states(rt).get(env_id)
            data_keys(rt).roll(rt, env, "records", data_keys(rt).primary(rt, env, "records")[0].id)
    store.put_many("u", [(f"u{i:04d}", b"\x00raw" * 5) for i in range(25)])  # a second table, bytes
    return env_id


def _env_deks(rt: Runtime, env_id: str) -> int:
    with rt.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Dek).where(Dek.environment_id == env_id)) or 0)


def _reencrypting_job(rt: Runtime, row_batch: int) -> str:
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    with rt.transaction() as s:
        j = job_store.find_job(s, view["id"])
        j.params = {**j.params, "row_batch": row_batch, "rewrite_chunk": 16}
    return str(view["id"])


@pytest.mark.parametrize("rows", [200, 2000])
def test_vault_calls_of_a_whole_reencrypting_job_stay_within_4_plus_2_per_data_key(
    rt: Runtime, vault_calls: Counter[str], rows: int
) -> None:
    env_id = _world(rt, rows)
    before = records(rt, env_id)
    data_keys(rt).flush()  # the job starts with a cold cache, as a fresh worker does
    vault_calls.clear()
    job_id = _reencrypting_job(rt, row_batch=20)  # 10 or 100 batches
    assert run(rt, job_id) == "succeeded", job(rt, job_id)
    total = sum(vault_calls.values())
    print(f"{rows} rows: vault calls {dict(vault_calls)}")
    data = _env_deks(rt, env_id)  # old and new DEKs of every store of the environment
    assert data >= 3
    assert total <= 4 + 2 * data, (dict(vault_calls), data)
    data_keys(rt).flush()
    assert records(rt, env_id) == before
    with rt.transaction() as s:
        batches = s.scalar(select(func.count()).select_from(JobBatch).where(JobBatch.job_id == job_id))
    assert batches is not None and batches >= rows // 20


def test_reencryption_carries_plaintext_bytes_without_decoding_values(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_id = _world(rt, 60)
    before = records(rt, env_id)
    plain_before = _plaintexts(rt, env_id)
    from keyshift.stores import records as records_module

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a value was decoded or encoded during re-encryption")

    monkeypatch.setattr(records_module, "decode_value", refuse)
    monkeypatch.setattr(records_module, "encode_value", refuse)
    job_id = _reencrypting_job(rt, row_batch=25)
    assert run(rt, job_id) == "succeeded", job(rt, job_id)
    monkeypatch.undo()
    assert _plaintexts(rt, env_id) == plain_before  # byte for byte
    data_keys(rt).flush()
    assert records(rt, env_id) == before


def _plaintexts(rt: Runtime, env_id: str) -> dict[tuple[str, str], bytes]:
    from keyshift.crypto.records import AssociatedData

    env = env_states(rt).get(env_id)
    keys = data_keys(rt)
    with rt.transaction() as s:
        rows = s.execute(
            select(DataRecord.table_name, DataRecord.record_id, DataRecord.value).where(
                DataRecord.environment_id == env_id
            )
        ).all()
    out = {}
    for t, rid, blob in rows:
        cipher = keys.decrypter(rt, env, "records", bytes(blob)[4:20])
        out[(t, rid)] = cipher.decrypt(bytes(blob), AssociatedData(env.tenant_id, env_id, "records", t, rid))
    return out


def test_the_chunk_size_adapts_within_its_bounds_and_a_job_param_fixes_it() -> None:
    sizer = reencrypt.ChunkSizer(1024, (64, 4096))
    for _ in range(10):
        sizer.observe(sizer.size, reencrypt.CHUNK_TARGET_SECONDS / 10)
    assert sizer.size == 4096
    for _ in range(10):
        sizer.observe(sizer.size, reencrypt.CHUNK_TARGET_SECONDS * 3)
    assert sizer.size == 64
    sizer.observe(5, 0.0)  # a short tail chunk says nothing
    assert sizer.size == 64
    fixed = reencrypt.ChunkSizer(7, None)
    fixed.observe(7, 0.0)
    fixed.observe(7, 99.0)
    assert fixed.size == 7


@pytest.mark.parametrize("batch", [0, -5, True, "500", 1_000_001])
def test_a_bad_row_batch_fails_the_plan_before_any_dek_is_retired(rt: Runtime, batch: Any) -> None:
    env_id = _world(rt, 20)
    with rt.transaction() as s:
        states = sorted(s.scalars(select(Dek.state).where(Dek.environment_id == env_id)))
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    with rt.transaction() as s:
        j = job_store.find_job(s, view["id"])
        j.params = {**j.params, "row_batch": batch}
    assert run(rt, view["id"]) == "failed"
    assert job(rt, view["id"])["error"]["code"] == "invalid_value"
    assert "row_batch" in job(rt, view["id"])["error"]["message"]
    with rt.transaction() as s:
        assert sorted(s.scalars(select(Dek.state).where(Dek.environment_id == env_id))) == states


def test_key_ranges_cover_every_row_once(rt: Runtime) -> None:
    env_id = _world(rt, 101, deks=1)
    with rt.transaction() as s:
        assert record_batches.table_names(s, env_id) == ["t", "u"]
        ranges = record_batches.range_bounds(s, env_id, "t", 20)
    assert [n for *_, n in ranges] == [20, 20, 20, 20, 20, 1]
    seen: list[str] = []
    for after, upper, n in ranges:
        got = record_batches.read_range(rt, env_id, "t", after, upper, 1000)
        assert len(got) == n
        seen += [r.record_id for r in got]
    assert seen == sorted(records(rt, env_id, "t")) and len(seen) == len(set(seen))


# -- PostgreSQL: statistics absent ---------------------------------------------------------------


def test_batch_queries_use_an_index_range_with_statistics_absent_on_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    from keyshift.bootstrap import init_home

    init_home(tmp_path / "home", database_url=pg_url, allow_fake_clock=True)
    eng = create_engine(pg_url)
    with eng.begin() as c:
        c.execute(text("ALTER TABLE data_records SET (autovacuum_enabled = false)"))
        # 200k rows in 4 environments (as after a bulk import), never analyzed
        c.execute(
            text(
                "INSERT INTO data_records (environment_id, table_name, record_id, version, dek_id, "
                "value, updated_at) SELECT 'env' || (g % 4), 't', 'r' || lpad(g::text, 7, '0'), 1, "
                "'00', '\\x00'::bytea, now() FROM generate_series(1, 200000) g"
            )
        )
    with eng.connect() as c:
        stats = c.execute(
            text(
                "SELECT count(*) FROM pg_stats "
                "WHERE schemaname = current_schema() AND tablename = 'data_records'"
            )
        ).scalar_one()
        assert stats == 0, "statistics are present; the test needs them absent"
        analyzed = c.execute(
            text(
                "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema() AND relname = 'data_records'"
            )
        ).first()
        assert analyzed is None or analyzed == (None, None)
        stmts = {
            "range page": record_batches.range_query("env1", "t", "r0001000", "r0150000", 500),
            "range page, open end": record_batches.range_query("env1", "t", "r0001000", None, 500),
            "first page": record_batches.range_query("env1", "t", None, "r0005000", 500),
        }
        for name, (stmt, args) in stmts.items():
            for arg in args:  # the statement read_range sends, with its parameters as literals
                stmt = stmt.replace("?", f"'{arg}'" if isinstance(arg, str) else str(int(arg)), 1)
            plan = "\n".join(r[0] for r in c.execute(text(f"EXPLAIN {stmt}")))
            assert "Index Scan" in plan or "Index Only Scan" in plan, (name, plan)
            assert "Seq Scan" not in plan and "Sort" not in plan, (name, plan)
        # the chunk's compare-and-swap write: the key range by index, joined to the new values by
        # hashing (a loop over the arrays per row of the range would be quadratic in the chunk)
        c.rollback()
        with c.begin():
            c.execute(record_batches._PG_SETTINGS)
            ids = [f"r{i:07d}" for i in range(5000, 7000, 4)]
            params = {"env": "env1", "tbl": "t", "lo": ids[0], "hi": ids[-1], "at": "2026-01-01T00:00:00Z"}
            params |= {"ids": ids, "versions": [1] * len(ids), "blobs": [b"x"] * len(ids)}
            params["deks"] = ["00"] * len(ids)
            plan = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + str(record_batches._PG_CAS)), params))
            assert "Index Cond" in plan and "record_id" in plan.split("Index Cond")[1], plan
            assert "Hash Join" in plan and "Nested Loop" not in plan and "Seq Scan" not in plan, plan
    eng.dispose()


# -- several worker processes on one PostgreSQL job ------------------------------------------------


def _worker_child(home: str, url: str, job_id: str) -> None:
    from keyshift.jobs.runner import Worker

    try:
        with Runtime.open(home=home, database_url=url, principal="operator:scale-worker") as crt:
            Worker(crt, poll_seconds=0.01).run_job(job_id, timeout=120)
    except BaseException:
        os._exit(3)
    os._exit(0)


def test_three_worker_processes_share_one_postgresql_job(rt: Runtime, db_url: str | None) -> None:
    if db_url is None:
        pytest.skip("SKIP LOCKED leases: PostgreSQL only")
    env_id = _world(rt, 600)
    before = records(rt, env_id)
    job_id = _reencrypting_job(rt, row_batch=20)
    home = str(rt.settings.home_path())
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker_child, args=(home, db_url, job_id)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert job(rt, job_id)["state"] == "succeeded", job(rt, job_id)
    from keyshift.jobs.plans import plan_for

    with rt.transaction() as s:
        j = job_store.find_job(s, job_id)
        phase = [p.name for p in plan_for("link").phases(j)].index("reencrypt")
        owners = {
            o.rsplit(":", 2)[1]
            for o in s.scalars(
                select(JobBatch.lease_owner).where(JobBatch.job_id == job_id, JobBatch.phase == phase)
            )
        }
        old = set(job_store.find_job(s, job_id).checkpoint["old_record_deks"])
        left = s.scalar(
            select(func.count())
            .select_from(DataRecord)
            .where(DataRecord.environment_id == env_id, DataRecord.dek_id.in_(old))
        )
    assert len(owners) >= 2, owners  # the batches really were shared
    assert left == 0
    data_keys(rt).flush()
    assert records(rt, env_id) == before


# -- audit moves -----------------------------------------------------------------------------------


def test_audit_moves_carry_event_bytes_and_keep_vault_calls_within_the_bound(
    rt: Runtime, tmp_path: Path, vault_calls: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyshift.control import tenants
    from keyshift.stores import audit as audit_module

    from .helpers import byok_world, fill, read_all

    w = byok_world(rt, tmp_path, envs=("moving",))
    env_id = w["envs"]["moving"]
    expected = fill(rt, env_id, rows=10, events=60)
    vault, key = customer_key(rt, "move-kv", "move-cmk")
    make_policy(rt, w["tenant"], "move-pol", vault, key)
    tenants.byok_flag_remove(rt, w["tenant"], ticket="SR-15")
    data_keys(rt).flush()
    vault_calls.clear()
    view = start_link(rt, "move-pol", "moving")
    with rt.transaction() as s:
        j = job_store.find_job(s, view["id"])
        assert j.params["move_audit"]
        j.params = {**j.params, "audit_batch": 5}  # 12 batches

    class NoJson:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"json.{name} called while moving audit events")

    monkeypatch.setattr(audit_module, "json", NoJson())
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    monkeypatch.undo()
    total = sum(vault_calls.values())
    data = _env_deks(rt, env_id)
    assert total <= 4 + 2 * data, (dict(vault_calls), data)
    data_keys(rt).flush()
    got = read_all(rt, env_id)
    assert got["events"] == expected["events"] and got["rows"] == expected["rows"]


def test_an_environment_disabled_mid_job_stops_the_job_and_flushes_its_keys(rt: Runtime) -> None:
    """No per-batch cache flush, but the environment state is checked before every chunk: a
    disabled environment stops the job (its cached DEKs dropped); resumed once enabled again, the
    job finishes with nothing lost."""
    from keyshift.db.models import Environment

    env_id = _world(rt, 200)
    before = records(rt, env_id)
    job_id = _reencrypting_job(rt, row_batch=50)
    chunks = {"n": 0}

    def disable_after_three_chunks(name: str) -> None:
        if name == "reencrypt:chunk":
            chunks["n"] += 1
            if chunks["n"] == 3:
                with rt.transaction() as s:
                    s.execute(update(Environment).where(Environment.id == env_id).values(state="disabled"))
                env_states(rt).invalidate(env_id)

    assert run(rt, job_id, hooks={"point": disable_after_three_chunks}) == "failed"
    assert job(rt, job_id)["error"]["code"] == "environment_disabled"
    with rt.transaction() as s:
        deks = list(s.scalars(select(Dek.id).where(Dek.environment_id == env_id)))
    assert all(data_keys(rt).cache.get(env_id, bytes.fromhex(d)) is None for d in deks)
    with rt.transaction() as s:
        s.execute(update(Environment).where(Environment.id == env_id).values(state="enabled"))
    env_states(rt).invalidate(env_id)
    job_store.resume(rt, job_id)
    assert run(rt, job_id) == "succeeded", job(rt, job_id)
    data_keys(rt).flush()
    assert records(rt, env_id) == before


def test_a_long_batch_renews_its_lease(rt: Runtime) -> None:
    """A batch that outlasts a third of its lease renews it between chunks, so no other worker
    takes (and redoes) a batch that is still progressing."""
    env_id = _world(rt, 60, deks=1)
    before = records(rt, env_id)
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    with rt.transaction() as s:
        j = job_store.find_job(s, view["id"])
        j.params = {**j.params, "row_batch": 60, "rewrite_chunk": 6}  # one batch of 10 chunks
    expiries: list[Any] = []

    def slow_chunk(name: str) -> None:
        if name == "reencrypt:chunk":
            time.sleep(0.15)
            with rt.transaction() as s:
                expiries.append(
                    s.scalar(
                        select(func.max(JobBatch.lease_expires)).where(
                            JobBatch.job_id == view["id"], JobBatch.state == "leased"
                        )
                    )
                )

    assert run(rt, view["id"], lease_seconds=0.9, hooks={"point": slow_chunk}) == "succeeded"
    # table "t": one batch of 10 chunks (then table "u"); its lease was renewed along the way
    assert len(expiries) >= 10 and len(set(expiries[:10])) >= 3, expiries
    data_keys(rt).flush()
    assert records(rt, env_id) == before


@pytest.mark.parametrize("item_id", ["r1", "", "évé:ñ@x", "a" * 512, "b" * 600])
def test_the_rekey_location_encodes_exactly_as_associated_data(item_id: str) -> None:
    from keyshift.crypto.records import AssociatedData, ad_prefix

    got = ad_prefix("tenant-1", "env-ü", "records", "accounts").for_record(item_id)
    want = AssociatedData("tenant-1", "env-ü", "records", "accounts", item_id)
    assert got == want.encode()
