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

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from keyshift.db.models import DataRecord, Dek, Job
from keyshift.errors import UsageError
from keyshift.jobs.context import BatchContext, StepContext
from keyshift.migrate.rekey import Rekeyer
from keyshift.runtime import Runtime
from keyshift.stores import record_batches as rb

STORE = "records"
ROW_BATCH = 500
# SQLite: every batch costs a few bookkeeping transactions (claim, finish, job state) of a
# millisecond or more each under the database-wide write lock, which a client write that arrives
# meanwhile waits out: at 500 rows per batch they set the client p99 during a job (`bench
# latency`: 2.9x alone; 1.4-2.1x at 5,000). A batch is the unit of a lease and of redone work
# after a crash (idempotent), not of a write transaction.
ROW_BATCH_BY_DIALECT = {"sqlite": 5000, "postgresql": 5000}
MAX_ROW_BATCH = 1_000_000
# Rows per write transaction (job param `rewrite_chunk`), default per database. SQLite has one
# database-wide write lock that every transaction takes: `bench migrate` measured client p99 during
# a migration at ~3 ms with 1 row per transaction vs ~8-10 ms with 4..64 (10x the rows/s at 64), so
# SQLite keeps 1 (no worse for clients than before). PostgreSQL locks rows, not the database: a
# chunk blocks only clients writing those same rows; its size adapts (ChunkSizer).
REWRITE_CHUNK = 64
REWRITE_CHUNK_BY_DIALECT = {"sqlite": 1, "postgresql": 1024}
ADAPTIVE = {"postgresql": (64, 4096)}  # dialect -> (min, max) rows per write transaction
CHUNK_TARGET_SECONDS = 0.1  # how long one write transaction may hold its rows' locks
READ_PAGE = 64  # at least this many rows per read transaction
PIPELINED = ("postgresql",)  # a chunk's write overlaps the next chunk's crypto (row locks only)
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


class _Writes:
    """The compare-and-swap writes of re-encrypted chunks, in order, one at a time. On PostgreSQL
    a write runs in a second thread while this one decrypts and encrypts the next chunk (the
    database works while Python computes); elsewhere inline. `reencrypt:chunk` is reached after
    each write has committed."""

    def __init__(
        self, rt: Runtime, sizer: ChunkSizer, ctx: BatchContext | None, *, background: bool = True
    ) -> None:
        self.rt, self.sizer, self.ctx = rt, sizer, ctx
        pipelined = background and rt.engine.dialect.name in PIPELINED
        self.pool = ThreadPoolExecutor(1, "keyshift-reencrypt") if pipelined else None
        self.inflight: tuple[Future[tuple[int, float]], int] | None = None
        self.done = 0
        self.renewed = time.monotonic()

    def _write(self, env_id: str, table: str, items: list[tuple[str, int, bytes]]) -> tuple[int, float]:
        started = time.monotonic()
        won = rb.cas_write(self.rt, env_id, table, items, self.rt.clock.now())
        return len(won), time.monotonic() - started

    def submit(self, env_id: str, table: str, items: list[tuple[str, int, bytes]]) -> None:
        self.wait()
        if self.pool is None:
            self._settle(self._write(env_id, table, items), len(items))
        else:
            self.inflight = (self.pool.submit(self._write, env_id, table, items), len(items))

    def wait(self) -> None:
        if self.inflight is not None:
            future, rows = self.inflight
            self.inflight = None
            self._settle(future.result(), rows)

    def _settle(self, result: tuple[int, float], rows: int) -> None:
        won, seconds = result
        self.done += won
        self.sizer.observe(rows, seconds)
        if self.ctx is not None:
            self.ctx.point("reencrypt:chunk")
            if time.monotonic() - self.renewed > self.ctx.lease_seconds / 3:
                # a long batch keeps its lease (LeaseLost if another worker took it meanwhile)
                with self.rt.transaction() as s:
                    self.ctx.renew(s)
                self.renewed = time.monotonic()

    def close(self, *, failed: bool) -> None:
        try:
            if failed and self.inflight is not None:
                with contextlib.suppress(Exception):  # the first failure is what the caller raises
                    self.inflight[0].result()
                self.inflight = None
            else:
                self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)


def _rewrite_rows(rekeyer: Rekeyer, table: str, rows: list[rb.RowBlob], writes: _Writes) -> None:
    """Re-encrypt the rows still under an old DEK (as the blob's authenticated header names it),
    `sizer.size` rows per write transaction."""
    todo = [r for r in rows if rekeyer.under_old(r.value)]
    i = 0
    while i < len(todo):
        env = rekeyer.env()  # fail closed: a disabled or locked environment stops the job here
        part = todo[i : i + writes.sizer.size]
        i += len(part)
        blobs = rekeyer.reencrypt(env, table, [(r.record_id, r.value) for r in part])
        writes.submit(env.id, table, [(r.record_id, r.version, b) for r, b in zip(part, blobs, strict=True)])


def run_batch(rt: Runtime, ctx: BatchContext) -> None:
    env_id = ctx.job.environment_id or ""
    spec = ctx.spec
    rekeyer = Rekeyer(rt, env_id, STORE, _old_deks(rt, ctx.job), job_id=ctx.job.id)
    rekeyer.env()  # the environment-state check, once per batch at least (no cache flush)
    writes = _Writes(rt, chunk_sizer(rt, ctx.job), ctx)
    try:
        _rewrite_range(rt, rekeyer, spec, writes)
    except BaseException:
        writes.close(failed=True)
        raise
    writes.close(failed=False)
    ctx.point("reencrypt:rows")
    with rt.transaction() as s:
        ctx.finish(s, int(spec.get("rows", 0)))


def _rewrite_range(rt: Runtime, rekeyer: Rekeyer, spec: dict[str, Any], writes: _Writes) -> None:
    table = spec["table"]
    after, upper = spec.get("after"), spec.get("upper", spec.get("last"))
    first = spec.get("first")  # a range planned by an earlier version: [first, last]
    while True:
        page = max(writes.sizer.size, READ_PAGE)
        rows = rb.read_range(rt, rekeyer.env_id, table, after, upper, page, first=None if after else first)
        if not rows:
            return
        after = rows[-1].record_id
        _rewrite_rows(rekeyer, table, rows, writes)
        if len(rows) < page:
            return


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
    rekeyer = Rekeyer(rt, env_id, STORE, old, job_id=ctx.job.id)
    writes = _Writes(rt, chunk_sizer(rt, ctx.job), None, background=False)  # stragglers: few
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
                _rewrite_rows(rekeyer, t, rows, writes)
        remaining = _old_ids(rt, env_id, old)
    with rt.transaction() as s:
        ctx.advance(s, {"reencrypt_remaining": len(remaining)})
