"""Moving an environment's audit log and files out of SQL once its tenant's SQL restriction is lifted.

A legacy BYOK tenant keeps every environment SQL-only (audit rows and files inside SQL). When the
tenant finalizes (its last BYOK environment migrated, was reverted or was deleted, and the BYOK
feature is off), the restriction is lifted — and it must be lifted in fact, not just in name: each
remaining environment still in the SQL layout gets a `relayout` job that moves its audit events to
the document store and its files to file storage, with the same online machinery a link uses
(`keyshift.migrate.moves`: transition layout, batches, sweep), under the environment's current key.
No key changes. At the end the SQL copy is deleted (there is no restore window for a relayout).

Phases: cutover (transition layout) -> settle -> move_audit* -> move_files* -> move_sweep -> finish.
A relayout is cancellable until its cutover. Environments that cannot be started at finalization
(another job holds them, or they are not enabled) are picked up by `relayout_due`, a maintenance
task, once they can.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import Environment, Job, Tenant
from keyshift.errors import ConflictError
from keyshift.jobs import store
from keyshift.jobs.context import StepContext
from keyshift.jobs.plans import Phase
from keyshift.migrate import moves
from keyshift.migrate.keychange import KeyChangePlan
from keyshift.runtime import Runtime

KIND = "relayout"


def needs_relayout(tenant: Tenant, env: Environment) -> dict[str, bool] | None:
    """The move flags for an environment that should leave SQL now, or None."""
    stores = dict(env.stores or {})
    if tenant.sql_restriction or env.state == "deleted":
        return None
    if any(k.endswith("_from") for k in stores):  # a transition is in progress
        return None
    flags = {"move_audit": stores.get("audit") == "sql", "move_files": stores.get("files") == "sql"}
    return flags if any(flags.values()) else None


def start_relayouts(rt: Runtime, s: Session, tenant_id: str) -> dict[str, Any]:
    """Start a relayout job for every environment of the tenant that can start one now (caller's
    transaction); the others are listed with the reason (maintenance retries them)."""
    tenant = s.get(Tenant, tenant_id)
    assert tenant is not None
    started: list[str] = []
    waiting: dict[str, str] = {}
    envs = s.scalars(
        select(Environment)
        .where(Environment.tenant_id == tenant_id, Environment.state != "deleted")
        .order_by(Environment.name)
    ).all()
    for env in envs:
        flags = needs_relayout(tenant, env)
        if flags is None:
            continue
        if env.state != "enabled":
            waiting[env.id] = f"environment is {env.state}"
            continue
        other = store.running_job_for(s, env.id)
        if other is not None:
            waiting[env.id] = f"job {other.id} ({other.kind}) holds it"
            continue
        job = store.create_job(
            rt, s, KIND, environment_id=env.id, tenant_id=tenant_id, params={"target": "same", **flags}
        )
        audit_trail.record(
            rt,
            s,
            "environment.relayout.start",
            target_type="environment",
            target_id=env.id,
            tenant_id=tenant_id,
            reason="the tenant's SQL restriction was lifted: audit and files move out of SQL",
            details={"job": job.id, **flags},
        )
        started.append(job.id)
    return {"jobs": started, "waiting": waiting}


def cancel_relayouts(rt: Runtime, s: Session, tenant_id: str) -> list[str]:
    """The tenant is SQL-restricted again (a restore un-finalized it): relayouts that have not cut
    over yet are cancelled (pending/failed at once, running at its next boundary), in the caller's
    transaction; one past its cutover finishes its move."""
    now = rt.clock.now()
    out: list[str] = []
    jobs = s.scalars(
        select(Job).where(Job.tenant_id == tenant_id, Job.kind == KIND, Job.state.in_(store.ACTIVE_STATES))
    ).all()
    for job in jobs:
        if (job.checkpoint or {}).get("cut"):
            continue
        if job.state in ("pending", "failed"):
            store.mark_cancelled(s, job.id, now)
        else:
            job.cancel_requested = True
        out.append(job.id)
        audit_trail.record(
            rt,
            s,
            "job.cancel",
            target_type="job",
            target_id=job.id,
            tenant_id=tenant_id,
            reason="the tenant is SQL-restricted again: nothing to move out of SQL",
        )
    return out


def relayout_due(rt: Runtime) -> dict[str, Any]:
    """Maintenance: start relayouts that could not start when their tenant finalized."""
    with rt.transaction() as s:
        tenant_ids = list(
            s.scalars(
                select(Environment.tenant_id)
                .join(Tenant, Tenant.id == Environment.tenant_id)
                .where(
                    Tenant.sql_restriction.is_(False),
                    Tenant.byok_vault_id.is_not(None),  # only a former BYOK tenant has SQL-only envs
                    Environment.state == "enabled",
                )
                .distinct()
            )
        )
    jobs: list[str] = []
    for tenant_id in tenant_ids:
        with rt.transaction() as s:
            jobs += start_relayouts(rt, s, tenant_id)["jobs"]
    return {"jobs": jobs}


class RelayoutPlan(KeyChangePlan):
    """The move phases of a key change, without the key change."""

    def __init__(self) -> None:
        super().__init__(KIND)

    def phases(self, job: Job) -> list[Phase]:
        out = [Phase("cutover"), Phase("settle")]
        if job.params.get("move_audit"):
            out.append(Phase("move_audit", batched=True))
        if job.params.get("move_files"):
            out.append(Phase("move_files", batched=True))
        return [*out, Phase("move_sweep"), Phase("finish")]

    def rollback(self, rt: Runtime, session: Session, job: Job) -> None:
        return None  # nothing changed before the cutover

    def _step_cutover(self, rt: Runtime, ctx: StepContext) -> None:
        job = ctx.job
        with rt.transaction() as s:
            env = s.scalars(
                select(Environment).where(Environment.id == job.environment_id).with_for_update()
            ).first()
            tenant = s.get(Tenant, env.tenant_id) if env is not None else None
            if env is None or tenant is None:
                raise ConflictError("the job's environment no longer exists", code="environment_not_found")
            if tenant.sql_restriction:
                raise ConflictError(
                    f"tenant {tenant.name!r} is SQL-restricted again; nothing to move",
                    code="sql_restriction",
                )
            moves.validate_sources(rt, s, job)  # before the point of no return (still cancellable)
            source = dict(env.stores or {})
            env.stores = moves.transition_layout(source, job.params)
            ctx.advance(s, {"cut": True, "cut_wall": time.time(), "source": {"stores": source}})
            audit_trail.record(
                rt,
                s,
                "environment.relayout.cutover",
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
                details={"job": job.id, "stores": dict(env.stores)},
            )
        from keyshift.stores.envstate import env_states

        env_states(rt).invalidate(job.environment_id or "")

    def _step_finish(self, rt: Runtime, ctx: StepContext) -> None:
        job = ctx.job
        with rt.transaction() as s:
            env = s.get(Environment, job.environment_id, with_for_update=True)
            assert env is not None
            moves.end_transition(env)
            purged = moves.purge_sql_copy(s, env)
            audit_trail.record(
                rt,
                s,
                "environment.relayout",
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
                details={"job": job.id, "stores": dict(env.stores or {}), "sql_copy_purged": purged},
            )
            ctx.advance(s, {"finished": True, "sql_copy_purged": purged})
        from keyshift.stores.envstate import env_states

        env_states(rt).invalidate(job.environment_id or "")


RELAYOUT_PLAN = RelayoutPlan()
