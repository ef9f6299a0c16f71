"""`--reencrypt`: after cutover, every record is rewritten under fresh DEKs (wrapped by the new key).

Planning retires the environment's active `records` DEKs (so the next write makes a fresh DEK under
the new binding), remembers them, and splits each table into key ranges by walking the primary key
(`stores.record_batches`: every query is an index range scan whatever the planner statistics). A
batch reads its range page by page in key order, re-encrypts the plaintext bytes of rows still under
an old DEK (`migrate.rekey`: no JSON round trip, vault work O(data keys)) and writes them with
compare-and-swap on the row version: a row a client wrote meanwhile is already under the fresh DEK
and is left alone (never overwritten, never dropped). Batches are idempotent: only rows still under
an old DEK are touched. The sweep step catches rows another process wrote under an old DEK it still
had cached. Old DEKs stay `retired` (readable) — destroying them is not safe while another process
may still hold one in its cache.

Sizes: `row_batch` rows per leased batch (default per database), `rewrite_chunk` rows per write
transaction. Without the job param the chunk adapts on PostgreSQL (`ChunkSizer`: grows while a write
transaction stays under `CHUNK_TARGET_SECONDS`, shrinks when it takes longer); SQLite keeps 1.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from keyshift.crypto.records import AssociatedData
from keyshift.db.models import DataRecord, Dek, Job
from keyshift.errors import UsageError
from keyshift.jobs.context import BatchContext, StepContext
from keyshift.migrate.rekey import Rekeyer
from keyshift.runtime import Runtime
from keyshift.stores import record_batches as rb

STORE = "records"
ROW_BATCH = 500
ROW_BATCH_BY_DIALECT = {"sqlite": 500, "postgresql": 5000}
MAX_ROW_BATCH = 1_000_000
# Rows per write transaction (job param `rewrite_chunk`), default per database. SQLite has one
# database-wide write lock that every transaction takes: `bench migrate` measured client p99 during
# a migration at ~3 ms with 1 row per transaction vs ~8-10 ms with 4..64 (10x the rows/s at 64), so
# SQLite keeps 1 (no worse for clients than before). PostgreSQL locks rows, not the database: a
# chunk blocks only clients writing those same rows; its size adapts (ChunkSizer).
REWRITE_CHUNK = 64
REWRITE_CHUNK_BY_DIALECT = {"sqlite": 1, "postgresql": 256}
ADAPTIVE = {"postgresql": (32, 4096)}  # dialect -> (min, max) rows per write transaction
CHUNK_TARGET_SECONDS = 0.05  # how long one write transaction may hold its rows' locks
READ_PAGE = 64  # at least this many rows per read transaction
SWEEP_PASSES = 5


def plan(rt: Runtime, session: Session, job: Job) -> list[dict[str, Any]]:
    env_id = job.environment_id
    assert env_id is not None
    rewrite_chunk(rt, job)  # a bad knob fails the job before any DEK is retired
    size = row_batch(rt, job)
    old = list(
        session.scalars(
            select(Dek.id).where(Dek.environment_id == env_id, Dek.store == STORE, Dek.state != "destroyed")
        )
    )
    session.execute(
        update(Dek)
        .where(Dek.environment_id == env_id, Dek.store == STORE, Dek.state == "active")
        .values(state="retired", version=Dek.version + 1)
        .execution_options(synchronize_session=False)
    )
    job.checkpoint = {**(job.checkpoint or {}), "old_record_deks": old}
    specs: list[dict[str, Any]] = []
    for table in rb.table_names(session, env_id):
        for after, upper, rows in rb.range_bounds(session, env_id, table, size):
            specs.append({"table": table, "after": after, "upper": upper, "rows": rows})
    job.items_total += sum(s["rows"] for s in specs)
    return specs


def default_chunk(rt: Runtime) -> int:
    return REWRITE_CHUNK_BY_DIALECT.get(rt.engine.dialect.name, REWRITE_CHUNK)


def _knob(job: Job, name: str, default: int, top: int) -> int:
    raw = (job.params or {}).get(name, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= top:
        raise UsageError(f"{name} must be an integer between 1 and {top}", code="invalid_value")
    return raw


def rewrite_chunk(rt: Runtime, job: Job) -> int:
    return _knob(job, "rewrite_chunk", default_chunk(rt), 10_000)


def row_batch(rt: Runtime, job: Job) -> int:
    return _knob(job, "row_batch", ROW_BATCH_BY_DIALECT.get(rt.engine.dialect.name, ROW_BATCH), MAX_ROW_BATCH)


class ChunkSizer:
    """Rows per write transaction. Fixed when the job sets `rewrite_chunk` (or the database has
    no adaptive range); else doubled while a write transaction takes under half the target and
    halved when it takes longer than the target, within the database's range."""

    def __init__(self, start: int, bounds: tuple[int, int] | None) -> None:
        self.bounds = bounds
        self.size = start if bounds is None else min(max(start, bounds[0]), bounds[1])

    def observe(self, rows: int, seconds: float) -> None:
        if self.bounds is None or rows < self.size:
            return  # a short tail chunk says nothing about the size
        lo, hi = self.bounds
        if seconds > CHUNK_TARGET_SECONDS:
            self.size = max(lo, self.size // 2)
        elif seconds < CHUNK_TARGET_SECONDS / 2:
            self.size = min(hi, self.size * 2)


_sizers: dict[str, ChunkSizer] = {}
_sizers_lock = threading.Lock()


def chunk_sizer(rt: Runtime, job: Job) -> ChunkSizer:
    """One sizer per job per process, so what a batch learnt carries to the next."""
    fixed = "rewrite_chunk" in (job.params or {})
    with _sizers_lock:
        sizer = _sizers.get(job.id)
        if sizer is None:
            if len(_sizers) > 64:
                _sizers.clear()
            bounds = None if fixed else ADAPTIVE.get(rt.engine.dialect.name)
            sizer = _sizers[job.id] = ChunkSizer(rewrite_chunk(rt, job), bounds)
        return sizer


def _old_deks(rt: Runtime, job: Job) -> list[str]:
    old = list((job.checkpoint or {}).get("old_record_deks") or [])
    if not old:  # planned by another worker: read the checkpoint it committed
        with rt.transaction() as s:
            old = list(s.get(Job, job.id).checkpoint.get("old_record_deks") or [])  # type: ignore[union-attr]
    return old


def _rewrite_rows(
    rt: Runtime,
    rekeyer: Rekeyer,
    table: str,
    rows: list[rb.RowBlob],
    sizer: ChunkSizer,
    ctx: BatchContext | StepContext | None,
) -> int:
    """Re-encrypt the rows still under an old DEK, `sizer.size` rows per write transaction."""
    todo = [r for r in rows if rekeyer.is_old(r.dek_id)]
    done = 0
    i = 0
    while i < len(todo):
        env = rekeyer.env()  # fail closed: a disabled or locked environment stops the job here
        part = todo[i : i + sizer.size]
        i += len(part)
        ads = [AssociatedData(env.tenant_id, env.id, STORE, table, r.record_id) for r in part]
        blobs = rekeyer.reencrypt(env, [(ad, r.value) for ad, r in zip(ads, part, strict=True)])
        items = [(r.record_id, r.version, b) for r, b in zip(part, blobs, strict=True)]
        started = time.monotonic()
        done += len(rb.cas_write(rt, env.id, table, items, rt.clock.now()))
        sizer.observe(len(part), time.monotonic() - started)
        if ctx is not None:
            ctx.point("reencrypt:chunk")
    return done


def run_batch(rt: Runtime, ctx: BatchContext) -> None:
    env_id = ctx.job.environment_id or ""
    spec = ctx.spec
    rekeyer = Rekeyer(rt, env_id, STORE, _old_deks(rt, ctx.job))
    rekeyer.env()  # the environment-state check, once per batch at least (no cache flush)
    sizer = chunk_sizer(rt, ctx.job)
    table = spec["table"]
    after, upper = spec.get("after"), spec.get("upper", spec.get("last"))
    first = spec.get("first")  # a range planned by an earlier version: [first, last]
    while True:
        page = max(sizer.size, READ_PAGE)
        rows = rb.read_range(rt, env_id, table, after, upper, page, first=None if after else first)
        if not rows:
            break
        after = rows[-1].record_id
        _rewrite_rows(rt, rekeyer, table, rows, sizer, ctx)
        if len(rows) < page:
            break
    ctx.point("reencrypt:rows")
    with rt.transaction() as s:
        ctx.finish(s, int(spec.get("rows", 0)))


def _old_ids(rt: Runtime, env_id: str, old: list[str]) -> list[tuple[str, str]]:
    """Rows of the environment still under an old DEK (the (environment, DEK) index serves it)."""
    with rt.transaction() as s:
        return [
            (str(t), str(r))
            for t, r in s.execute(
                select(DataRecord.table_name, DataRecord.record_id)
                .where(and_(DataRecord.environment_id == env_id, DataRecord.dek_id.in_(old)))
                .order_by(DataRecord.table_name, DataRecord.record_id)
            ).all()
        ]


def sweep(rt: Runtime, ctx: StepContext) -> None:
    env_id = ctx.job.environment_id or ""
    with rt.transaction() as s:
        old = list(s.get(Job, ctx.job.id).checkpoint.get("old_record_deks") or [])  # type: ignore[union-attr]
    rekeyer = Rekeyer(rt, env_id, STORE, old)
    sizer = chunk_sizer(rt, ctx.job)
    remaining = _old_ids(rt, env_id, old)
    for _ in range(SWEEP_PASSES):
        if not remaining:
            break
        by_table: dict[str, list[str]] = {}
        for t, rid in remaining:
            by_table.setdefault(t, []).append(rid)
        for t, ids in by_table.items():
            for i in range(0, len(ids), READ_PAGE):
                rows = rb.read_ids(rt, env_id, t, ids[i : i + READ_PAGE])
                _rewrite_rows(rt, rekeyer, t, rows, sizer, None)
        remaining = _old_ids(rt, env_id, old)
    with rt.transaction() as s:
        ctx.advance(s, {"reencrypt_remaining": len(remaining)})
