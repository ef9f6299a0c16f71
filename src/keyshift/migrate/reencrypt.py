"""`--reencrypt`: after cutover, every record is rewritten under fresh DEKs (wrapped by the new key).

Planning retires the environment's active `records` DEKs (so the next write makes a fresh DEK under
the new binding), remembers them, and splits the rows still under them into key ranges. A batch
rewrites each row of its range with compare-and-swap on the row version: a row a client wrote
meanwhile is already under the fresh DEK and is left alone (never overwritten, never dropped).
Batches are idempotent: only rows still under an old DEK are touched. The sweep step catches rows
another process wrote under an old DEK it still had cached. Old DEKs stay `retired` (readable) —
destroying them is not safe while another process may still hold one in its cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from keyshift.db.models import DataRecord, Dek, Job
from keyshift.errors import UsageError
from keyshift.jobs.context import BatchContext, StepContext
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys

ROW_BATCH = 500
# Rows per write transaction (job param `rewrite_chunk`), default per database. SQLite has one
# database-wide write lock that every transaction takes: `bench migrate` measured client p99 during
# a migration at ~3 ms with 1 row per transaction vs ~8-10 ms with 4..64 (10x the rows/s at 64), so
# SQLite keeps 1 (no worse for clients than before). PostgreSQL locks rows, not the database: a
# chunk blocks only clients writing those same rows, so it takes chunks of 64 (not benchmarked).
REWRITE_CHUNK = 64
REWRITE_CHUNK_BY_DIALECT = {"sqlite": 1, "postgresql": REWRITE_CHUNK}
SWEEP_PASSES = 5


def plan(rt: Runtime, session: Session, job: Job) -> list[dict[str, Any]]:
    env_id = job.environment_id
    assert env_id is not None
    rewrite_chunk(rt, job)  # a bad knob fails the job before any DEK is retired
    old = list(
        session.scalars(
            select(Dek.id).where(
                Dek.environment_id == env_id, Dek.store == "records", Dek.state != "destroyed"
            )
        )
    )
    session.execute(
        update(Dek)
        .where(Dek.environment_id == env_id, Dek.store == "records", Dek.state == "active")
        .values(state="retired", version=Dek.version + 1)
        .execution_options(synchronize_session=False)
    )
    job.checkpoint = {**(job.checkpoint or {}), "old_record_deks": old}
    size = int(job.params.get("row_batch", ROW_BATCH))
    rows = session.execute(
        select(DataRecord.table_name, DataRecord.record_id)
        .where(DataRecord.environment_id == env_id, DataRecord.dek_id.in_(old))
        .order_by(DataRecord.table_name, DataRecord.record_id)
    ).all()
    job.items_total += len(rows)
    specs: list[dict[str, Any]] = []
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        # one range never spans two tables
        start = 0
        for j in range(1, len(chunk) + 1):
            if j == len(chunk) or chunk[j][0] != chunk[start][0]:
                specs.append(
                    {
                        "table": chunk[start][0],
                        "first": chunk[start][1],
                        "last": chunk[j - 1][1],
                        "rows": j - start,
                    }
                )
                start = j
    return specs


def default_chunk(rt: Runtime) -> int:
    return REWRITE_CHUNK_BY_DIALECT.get(rt.engine.dialect.name, REWRITE_CHUNK)


def rewrite_chunk(rt: Runtime, job: Job) -> int:
    raw = (job.params or {}).get("rewrite_chunk", default_chunk(rt))
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 10_000:
        raise UsageError("rewrite_chunk must be an integer between 1 and 10000", code="invalid_value")
    return raw


def _rewrite(
    rt: Runtime,
    env_id: str,
    table: str,
    ids: list[str],
    chunk: int = REWRITE_CHUNK,
    on_chunk: Callable[[], None] | None = None,
) -> int:
    """Rewrite rows under the primary DEK, `chunk` rows per write transaction; returns rows written.

    Rows deleted meanwhile are absent from the read (nothing to re-encrypt); rows written meanwhile
    lose the compare-and-swap and keep the client's value.
    """
    from keyshift.stores.records import RecordStore

    store = RecordStore(rt, env_id)
    done = 0
    for i in range(0, len(ids), chunk):
        recs = store.get_many(table, ids[i : i + chunk])
        if recs:
            done += len(store.put_many_if_versions(table, [(r.id, r.value, r.version) for r in recs]))
        if on_chunk is not None:
            on_chunk()
    return done


def _old_ids(
    rt: Runtime,
    env_id: str,
    old: list[str],
    table: str | None = None,
    first: str | None = None,
    last: str | None = None,
) -> list[tuple[str, str]]:
    with rt.transaction() as s:
        cond = [DataRecord.environment_id == env_id, DataRecord.dek_id.in_(old)]
        if table is not None:
            cond += [
                DataRecord.table_name == table,
                DataRecord.record_id >= first,
                DataRecord.record_id <= last,
            ]
        return [
            (str(t), str(r))
            for t, r in s.execute(
                select(DataRecord.table_name, DataRecord.record_id)
                .where(and_(*cond))
                .order_by(DataRecord.table_name, DataRecord.record_id)
            ).all()
        ]


def run_batch(rt: Runtime, ctx: BatchContext) -> None:
    env_id = ctx.job.environment_id or ""
    spec = ctx.spec
    old = list(ctx.job.checkpoint.get("old_record_deks") or [])
    if not old:  # planned by another worker: read the checkpoint it committed
        with rt.transaction() as s:
            old = list(s.get(Job, ctx.job.id).checkpoint.get("old_record_deks") or [])  # type: ignore[union-attr]
    data_keys(rt).flush(env_id)  # drop a cached (retired) primary: rows go under the fresh DEK
    ids = [rid for _t, rid in _old_ids(rt, env_id, old, spec["table"], spec["first"], spec["last"])]
    chunk = rewrite_chunk(rt, ctx.job)
    _rewrite(rt, env_id, spec["table"], ids, chunk, lambda: ctx.point("reencrypt:chunk"))
    ctx.point("reencrypt:rows")
    with rt.transaction() as s:
        ctx.finish(s, int(spec.get("rows", len(ids))))


def sweep(rt: Runtime, ctx: StepContext) -> None:
    env_id = ctx.job.environment_id or ""
    with rt.transaction() as s:
        old = list(s.get(Job, ctx.job.id).checkpoint.get("old_record_deks") or [])  # type: ignore[union-attr]
    remaining = _old_ids(rt, env_id, old)
    for _ in range(SWEEP_PASSES):
        if not remaining:
            break
        by_table: dict[str, list[str]] = {}
        for t, rid in remaining:
            by_table.setdefault(t, []).append(rid)
        for t, ids in by_table.items():
            _rewrite(rt, env_id, t, ids, rewrite_chunk(rt, ctx.job))
        remaining = _old_ids(rt, env_id, old)
    with rt.transaction() as s:
        ctx.advance(s, {"reencrypt_remaining": len(remaining)})
