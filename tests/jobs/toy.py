"""A small plan for testing the job machinery alone: every batch appends one admin-audit row per
item (a real table, written in the batch's transaction), and a serial step records a marker."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import select

from keyshift.control import audit_trail
from keyshift.db.models import AdminAuditEvent
from keyshift.errors import VaultUnavailableError
from keyshift.jobs.plans import Phase, register_plan


class ToyPlan:
    kind = "toy"

    def phases(self, job: Any) -> list[Phase]:
        return [Phase("copy", batched=True), Phase("cutover"), Phase("tail", batched=True)]

    def plan_phase(self, rt: Any, session: Any, job: Any, phase: Phase) -> list[dict[str, Any]]:
        n = int(job.params.get("items", 20))
        size = int(job.params.get("batch", 3))
        specs = [{"lo": lo, "hi": min(n, lo + size), "phase": phase.name} for lo in range(0, n, size)]
        job.items_total += n
        return specs

    def run_batch(self, rt: Any, ctx: Any) -> None:
        spec = ctx.spec
        delay = float(ctx.job.params.get("delay", 0))
        fail_at = ctx.job.params.get("fail_at")
        flag = ctx.job.params.get("fail_flag")
        if fail_at is not None and spec["lo"] <= fail_at < spec["hi"] and flag and os.path.exists(flag):
            raise VaultUnavailableError("vault unreachable (test)")
        with rt.transaction() as session:
            for i in range(spec["lo"], spec["hi"]):
                audit_trail.record(
                    rt, session, "toy.item", target_type="toy", target_id=f"{ctx.job.id}:{spec['phase']}:{i}"
                )
                ctx.point("mid-batch")
                if delay:
                    time.sleep(delay)
            ctx.finish(session, spec["hi"] - spec["lo"], 10 * (spec["hi"] - spec["lo"]))

    def run_step(self, rt: Any, ctx: Any) -> None:
        with rt.transaction() as session:
            audit_trail.record(rt, session, "toy.cutover", target_type="toy", target_id=ctx.job.id)
            ctx.point("cutover")
            ctx.advance(session, {"cut": True})

    def cancellable(self, job: Any) -> bool:
        return not job.checkpoint.get("cut")

    def rollback(self, rt: Any, session: Any, job: Any) -> None:
        audit_trail.record(rt, session, "toy.rollback", target_type="toy", target_id=job.id)


PLAN = ToyPlan()
register_plan(PLAN)


def effects(rt: Any, job_id: str) -> list[str]:
    with rt.transaction() as session:
        return list(
            session.scalars(
                select(AdminAuditEvent.target_id).where(
                    AdminAuditEvent.action == "toy.item", AdminAuditEvent.target_id.like(f"{job_id}:%")
                )
            )
        )
