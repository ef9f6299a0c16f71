"""Search index generations: declaring fields, the rebuild job, replacing the search key.

`set_fields` starts a new `building` generation (fields + the current search DEK) and a
`search_rebuild` job that fills it from the table's records; writers already index into it, and the
active generation keeps answering queries until the job's last step makes the new one active and
drops the old one's postings. `rekey` rolls the environment's search DEK (the old one is retired,
still readable) and starts a rebuild per table under the fresh DEK — the maintenance task
`rekey_due` does so after a swap or a re-encrypting key change.

Phases: index (batched: ranges of record ids) -> sweep (records written around the generation's
start, see docs/SEARCH.md) -> activate. Batches compare record versions inside their transaction,
so a value a client wrote meanwhile (already indexed by the write itself) is never overwritten.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import DataRecord, Environment, Job, SearchIndex
from keyshift.db.types import new_id
from keyshift.errors import NotFoundError
from keyshift.features.common import SEARCH, usable_env
from keyshift.features.search import (
    _P,
    LIVE,
    STORE,
    fetch_records,
    posting_rows,
    replace_postings,
    table_key,
    validate_fields,
)
from keyshift.jobs.context import BatchContext, StepContext
from keyshift.jobs.plans import Phase
from keyshift.jobs.store import create_job
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore, validate_table
from keyshift.timefmt import iso_z

KIND = "search_rebuild"
ROW_BATCH = 500
SWEEP_MARGIN = timedelta(seconds=5)
_R = DataRecord.__table__


def view(g: SearchIndex) -> dict[str, Any]:
    return {
        "table": g.table_name,
        "generation": g.generation,
        "fields": list(g.fields),
        "state": g.state,
        "job": g.job_id,
        "started_at": iso_z(g.started_at),
        "ready_at": iso_z(g.ready_at) if g.ready_at else None,
    }


def start_generation(
    rt: Runtime, env: EnvView, table: str, fields: list[str], dek_hex: str, *, action: str
) -> dict[str, Any]:
    """A new building generation of a table's index and the job that fills it (one transaction)."""
    with rt.transaction() as s:
        kek = s.execute(
            select(Environment.kek_vault_id, Environment.kek_key_name).where(Environment.id == env.id)
        ).one()
        top = s.scalar(
            select(func.max(SearchIndex.generation)).where(
                SearchIndex.environment_id == env.id, SearchIndex.table_name == table
            )
        )
        # A rebuild already under way is superseded: its postings go, its job finds it retired.
        for old in s.scalars(
            select(SearchIndex).where(
                SearchIndex.environment_id == env.id,
                SearchIndex.table_name == table,
                SearchIndex.state == "building",
            )
        ):
            old.state = "retired"
            s.execute(_P.delete().where(_P.c.index_id == old.id))
        g = SearchIndex(
            id=new_id("six"),
            environment_id=env.id,
            table_name=table,
            generation=(top or 0) + 1,
            fields=fields,
            dek_id=dek_hex,
            state="building",
            kek_vault_id=kek[0],
            kek_key_name=kek[1],
            started_at=rt.clock.now(),
        )
        s.add(g)
        s.flush()
        job = create_job(rt, s, KIND, tenant_id=env.tenant_id, params={"env": env.id, "index": g.id})
        g.job_id = job.id
        audit_trail.record(
            rt,
            s,
            action,
            target_type="environment",
            target_id=env.id,
            tenant_id=env.tenant_id,
            details={"table": table, "generation": g.generation, "fields": fields, "job": job.id},
        )
        s.flush()
        return view(g)


def set_fields(rt: Runtime, env_ref: str, table: str, fields: list[str]) -> dict[str, Any]:
    """Declare a table's searchable JSON fields: a new index generation, built by a job."""
    validate_table(table)
    fields = validate_fields(fields)
    env = usable_env(rt, env_ref, SEARCH, "search.fields")
    key, _ = data_keys(rt).primary(rt, env, STORE)
    return start_generation(rt, env, table, fields, key.id.hex(), action="search.fields")


def describe(rt: Runtime, env_ref: str) -> list[dict[str, Any]]:
    states = env_states(rt)
    env = states.resolve(env_ref)
    with rt.transaction() as s:
        gens = s.scalars(
            select(SearchIndex)
            .where(SearchIndex.environment_id == env.id, SearchIndex.state.in_(LIVE))
            .order_by(SearchIndex.table_name, SearchIndex.generation)
        )
        return [view(g) for g in gens]


def rekey(rt: Runtime, env_ref: str, *, reason: str = "requested") -> list[dict[str, Any]]:
    """Replace the environment's search key: retire the search DEK(s), rebuild every table's index."""
    env = usable_env(rt, env_ref, SEARCH, "search.rekey")
    with rt.transaction() as s:
        gens = [
            (g.table_name, list(g.fields), g.dek_id)
            for g in s.scalars(
                select(SearchIndex)
                .where(SearchIndex.environment_id == env.id, SearchIndex.state.in_(LIVE))
                .order_by(SearchIndex.table_name, SearchIndex.generation)
            )
        ]
    keys = data_keys(rt)
    for dek_hex in {d for _, _, d in gens}:
        keys.roll(rt, env, STORE, bytes.fromhex(dek_hex))
    new, _ = keys.primary(rt, env, STORE)
    latest: dict[str, list[str]] = {}
    for table, fields, _ in gens:
        latest[table] = fields  # the newest generation's fields win
    return [
        start_generation(rt, env, t, f, new.id.hex(), action=f"search.rekey.{reason}")
        for t, f in latest.items()
    ]


def rekey_due(rt: Runtime) -> dict[str, Any]:
    """Maintenance: after a swap or a re-encrypting key change, replace the search key of the env."""
    with rt.transaction() as s:
        rows = s.execute(
            select(SearchIndex.environment_id, func.min(SearchIndex.started_at))
            .where(SearchIndex.state == "active")
            .group_by(SearchIndex.environment_id)
        ).all()
        building = set(s.scalars(select(SearchIndex.environment_id).where(SearchIndex.state == "building")))
        due: list[tuple[str, str]] = []
        for env_id, since in rows:
            if env_id in building:
                continue
            jobs = s.scalars(
                select(Job).where(
                    Job.environment_id == env_id,
                    Job.state == "succeeded",
                    Job.kind.in_(("link", "swap", "unlink")),
                    Job.finished_at > since,
                )
            )
            for job in jobs:
                if job.kind == "swap" or (job.params or {}).get("reencrypt"):
                    due.append((env_id, job.kind if job.kind == "swap" else "reencrypt"))
                    break
    started: list[str] = []
    errors: dict[str, str] = {}
    for env_id, reason in due:
        try:
            for v in rekey(rt, env_id, reason=reason):
                started.append(v["job"])
        except Exception as err:  # one environment's trouble must not stop the others
            errors[env_id] = getattr(err, "code", type(err).__name__)
    return {"rebuild_jobs": started, "errors": errors}


# -- the rebuild plan ----------------------------------------------------------------------------


def _index(s: Session, index_id: str) -> SearchIndex | None:
    g = s.get(SearchIndex, index_id)
    if g is not None:
        s.expunge(g)
    return g


def _reindex(rt: Runtime, g: SearchIndex, records: list[Any], s_finish: Any) -> int:
    """Postings of `records` (id, value, version) into generation g, skipping rows written meanwhile."""
    env = env_states(rt).require_usable(g.environment_id)
    key = table_key(rt, env, g.table_name, g.dek_id)
    with rt.transaction() as s:
        if not records:
            s_finish(s)
            return 0
        ids = [r.id for r in records]
        now: dict[str, int] = {}
        # Lock the rows (a writer holds the same row lock while it replaces the record's postings),
        # then keep only records still at the version we read.
        for i in range(0, len(ids), 500):
            now.update(
                s.execute(
                    select(_R.c.record_id, _R.c.version)
                    .where(
                        _R.c.environment_id == g.environment_id,
                        _R.c.table_name == g.table_name,
                        _R.c.record_id.in_(ids[i : i + 500]),
                    )
                    .with_for_update()
                ).all()
            )
        fresh = [r for r in records if now.get(r.id) == r.version]
        live = s.scalar(select(SearchIndex.state).where(SearchIndex.id == g.id)) in LIVE
        if live and fresh:
            rows = posting_rows(g.id, key, list(g.fields), [(r.id, r.value) for r in fresh])
            replace_postings(s, g.id, [r.id for r in fresh], rows)
        s_finish(s)
        return len(fresh)


class RebuildPlan:
    kind = KIND

    def phases(self, job: Job) -> list[Phase]:
        return [Phase("index", batched=True), Phase("sweep"), Phase("activate")]

    def cancellable(self, job: Job) -> bool:
        return True

    def rollback(self, rt: Runtime, session: Session, job: Job) -> None:
        index_id = job.params.get("index")
        session.execute(
            update(SearchIndex)
            .where(SearchIndex.id == index_id, SearchIndex.state == "building")
            .values(state="retired")
        )
        session.execute(_P.delete().where(_P.c.index_id == index_id))

    def plan_phase(self, rt: Runtime, session: Session, job: Job, phase: Phase) -> list[dict[str, Any]]:
        g = session.get(SearchIndex, job.params["index"])
        if g is None or g.state != "building":
            return []
        ids = list(
            session.scalars(
                select(_R.c.record_id)
                .where(_R.c.environment_id == g.environment_id, _R.c.table_name == g.table_name)
                .order_by(_R.c.record_id)
            )
        )
        job.items_total += len(ids)
        size = int(job.params.get("row_batch", ROW_BATCH))
        return [
            {"after": ids[i - 1] if i else None, "last": ids[min(i + size, len(ids)) - 1]}
            for i in range(0, len(ids), size)
        ]

    def run_batch(self, rt: Runtime, ctx: BatchContext) -> None:
        with rt.transaction() as s:
            g = _index(s, ctx.job.params["index"])
        records: list[Any] = []
        if g is not None and g.state in LIVE:
            store = RecordStore(rt, g.environment_id)
            after, last = ctx.spec["after"], ctx.spec["last"]
            while True:
                try:
                    batch = store.scan(g.table_name, after=after, limit=ROW_BATCH)
                except NotFoundError:
                    break
                records += [r for r in batch if r.id <= last]
                if len(batch) < ROW_BATCH or batch[-1].id >= last:
                    break
                after = batch[-1].id
        n = len(records)
        if g is None:
            with rt.transaction() as s:
                ctx.finish(s, 0)
            return
        _reindex(rt, g, records, lambda s: ctx.finish(s, n))

    def run_step(self, rt: Runtime, ctx: StepContext) -> None:
        with rt.transaction() as s:
            g = _index(s, ctx.job.params["index"])
        if ctx.phase.name == "sweep":
            if g is not None and g.state == "building":
                self._sweep(rt, g)
            with rt.transaction() as s:
                ctx.advance(s)
            return
        with rt.transaction() as s:
            g2 = s.get(SearchIndex, ctx.job.params["index"], with_for_update=True)
            if g2 is not None and g2.state == "building":
                olds = list(
                    s.scalars(
                        select(SearchIndex).where(
                            SearchIndex.environment_id == g2.environment_id,
                            SearchIndex.table_name == g2.table_name,
                            SearchIndex.state == "active",
                        )
                    )
                )
                for old in olds:
                    old.state = "retired"
                    s.execute(_P.delete().where(_P.c.index_id == old.id))
                g2.state, g2.ready_at = "active", rt.clock.now()
                env = s.get(Environment, g2.environment_id)
                audit_trail.record(
                    rt,
                    s,
                    "search.index.activated",
                    target_type="environment",
                    target_id=g2.environment_id,
                    tenant_id=env.tenant_id if env else None,
                    details={
                        "table": g2.table_name,
                        "generation": g2.generation,
                        "replaced": [o.generation for o in olds],
                        "job": ctx.job.id,
                    },
                )
            ctx.advance(s)

    def _sweep(self, rt: Runtime, g: SearchIndex) -> None:
        # A write stamped within SWEEP_MARGIN of the generation's start may have read the list of
        # live generations before this one was committed: re-index those. Later writes index into
        # it themselves; earlier ones were committed before the batches read them.
        since = g.started_at - SWEEP_MARGIN
        with rt.transaction() as s:
            ids = list(
                s.scalars(
                    select(_R.c.record_id)
                    .where(
                        _R.c.environment_id == g.environment_id,
                        _R.c.table_name == g.table_name,
                        _R.c.updated_at >= since,
                        _R.c.updated_at <= g.started_at + SWEEP_MARGIN,
                    )
                    .order_by(_R.c.record_id)
                )
            )
        env = env_states(rt).require_usable(g.environment_id)
        for i in range(0, len(ids), ROW_BATCH):
            recs = fetch_records(rt, env, g.table_name, ids[i : i + ROW_BATCH])
            _reindex(rt, g, recs, lambda s: None)


REBUILD_PLAN = RebuildPlan()
