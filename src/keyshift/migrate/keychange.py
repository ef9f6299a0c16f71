"""One plan for every key change: link (platform/BYOK -> CMK), unlink, swap, rotate.

Phases (job.params decide which apply):
  prepare        pin the target key version; remember the source binding (checkpoint)
  rewrap*        pending wraps of every DEK under the target (batches of DEK ids)
  cutover        pending -> current, binding flipped, atomically (point of no return)
  reencrypt*     --reencrypt: every record rewritten under fresh DEKs (compare-and-swap)
  move_audit*    BYOK: audit events SQL -> document store (transition layout)
  move_files*    BYOK: files SQL -> file storage (transition layout)
  finish         layout settled, tenant finalization, summary
(* = batched)
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import Environment, Job
from keyshift.errors import ConflictError
from keyshift.jobs.context import BatchContext, StepContext
from keyshift.jobs.plans import Phase
from keyshift.migrate import rewrap
from keyshift.migrate.common import binding_view, platform_target, policy_target, resolve_version
from keyshift.runtime import Runtime

DEK_BATCH = 64
MOVE_FLAGS = ("move_audit", "move_files", "return_audit", "return_files")


class KeyChangePlan:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    # -- shape -------------------------------------------------------------------------------
    def phases(self, job: Job) -> list[Phase]:
        p = job.params
        out = [Phase("prepare"), Phase("rewrap", batched=True), Phase("cutover")]
        moving = any(p.get(k) for k in MOVE_FLAGS)
        if moving:
            out.append(Phase("settle"))
        if p.get("reencrypt"):
            out += [Phase("reencrypt", batched=True), Phase("reencrypt_sweep")]
        if p.get("move_audit"):
            out.append(Phase("move_audit", batched=True))
        if p.get("move_files"):
            out.append(Phase("move_files", batched=True))
        if p.get("return_audit"):
            out.append(Phase("return_audit", batched=True))
        if p.get("return_files"):
            out.append(Phase("return_files", batched=True))
        if moving:
            out.append(Phase("move_sweep"))
        out.append(Phase("finish"))
        return out

    def cancellable(self, job: Job) -> bool:
        return not (job.checkpoint or {}).get("cut")

    def rollback(self, rt: Runtime, session: Session, job: Job) -> None:
        if job.environment_id:
            rewrap.drop_pending(session, job.environment_id)

    # -- batched phases ------------------------------------------------------------------------
    def plan_phase(self, rt: Runtime, session: Session, job: Job, phase: Phase) -> list[dict[str, Any]]:
        env_id = job.environment_id
        assert env_id is not None
        if phase.name == "rewrap":
            ids = rewrap.env_dek_ids(session, env_id)
            size = int(job.params.get("dek_batch", DEK_BATCH))
            job.items_total += len(ids)
            return [{"deks": ids[i : i + size]} for i in range(0, len(ids), size)]
        if phase.name == "reencrypt":
            from keyshift.migrate import reencrypt

            return reencrypt.plan(rt, session, job)
        if phase.name in ("move_audit", "move_files", "return_audit", "return_files"):
            from keyshift.migrate import moves

            return moves.plan(rt, session, job, phase.name)
        raise ConflictError(f"unknown batched phase {phase.name}")

    def run_batch(self, rt: Runtime, ctx: BatchContext) -> None:
        name = ctx.phase.name
        if name == "rewrap":
            target = rewrap.target_from(ctx.job.checkpoint["target"])
            wraps = rewrap.compute_wraps(
                rt, ctx.job.environment_id or "", ctx.spec["deks"], target, job_id=ctx.job.id
            )
            ctx.point("rewrap:wrapped")
            with rt.transaction() as s:
                rewrap.insert_pending(rt, s, wraps, target)
                ctx.finish(s, len(ctx.spec["deks"]))
            return
        if name == "reencrypt":
            from keyshift.migrate import reencrypt

            reencrypt.run_batch(rt, ctx)
            return
        from keyshift.migrate import moves

        moves.run_batch(rt, ctx)

    # -- serial steps --------------------------------------------------------------------------
    def run_step(self, rt: Runtime, ctx: StepContext) -> None:
        getattr(self, f"_step_{ctx.phase.name}")(rt, ctx)

    def _step_prepare(self, rt: Runtime, ctx: StepContext) -> None:
        job = ctx.job
        with rt.transaction() as s:
            env = s.get(Environment, job.environment_id)
            if env is None:
                raise ConflictError("the job's environment no longer exists", code="environment_not_found")
            source = binding_view(env)
            if job.params.get("target") == "platform":
                target = platform_target(rt, s)
            elif job.params.get("target") == "byok":
                target = rewrap.target_from(job.params["byok_target"])
            else:
                from keyshift.db.models import Policy

                policy = s.get(Policy, job.policy_id)
                if policy is None:
                    raise ConflictError("the job's policy no longer exists", code="policy_not_found")
                target = policy_target(s, policy)
                if job.params.get("key_version"):
                    target = rewrap.target_from(
                        {**rewrap.target_dict(target), "key_version": job.params["key_version"]}
                    )
        target = resolve_version(rt, target)
        if any(job.params.get(k) for k in ("move_files", "return_files")):
            from keyshift.migrate import moves

            with rt.transaction() as s:
                moves.validate_sources(rt, s, job)  # before the point of no return
        with rt.transaction() as s:
            # Pending wraps can only be leftovers (one job per environment): e.g. a worker whose
            # lease expired mid-cutover. Never let one be flipped to current by this job.
            rewrap.drop_pending(s, job.environment_id or "")
            ctx.advance(s, {"target": rewrap.target_dict(target), "source": source})

    def _step_cutover(self, rt: Runtime, ctx: StepContext) -> None:
        job = ctx.job
        target = rewrap.target_from(job.checkpoint["target"])
        now = rt.clock.now()
        from_byok = bool(job.params.get("from_byok"))
        retain_until = now + timedelta(days=rt.settings.byok_retention_days) if from_byok else None
        binding = self.binding(rt, job, now, retain_until)
        if any(job.params.get(k) for k in ("move_audit", "move_files", "return_audit", "return_files")):
            from keyshift.migrate import moves

            layout = job.checkpoint["source"]["stores"]
            if self.kind == "restore":
                layout = {**layout, **job.params.get("layout", {})}
            binding["stores"] = moves.transition_layout(layout, job.params, backward=self.kind == "restore")

        def in_txn(s: Session) -> None:
            ctx.point("cutover:flipped")
            extra: dict[str, Any] = {}
            if job.params.get("return_files"):
                from keyshift.migrate.files_bridge import stash_sql_files

                # the retained pre-migration files leave the environment with the layout flip
                extra["stashed_sql_files"] = stash_sql_files(s, job.environment_id or "", job.id)
            ctx.advance(s, {"cut": True, "cut_at": now.isoformat(), "cut_wall": time.time(), **extra})
            audit_trail.record(
                rt,
                s,
                f"environment.{self.kind}.cutover",
                target_type="environment",
                target_id=job.environment_id,
                tenant_id=job.tenant_id,
                details={"job": job.id, "key": f"{target.vault_id}/{target.key_name}@{target.key_version}"},
            )

        summary = rewrap.cutover(
            rt,
            job.environment_id or "",
            target,
            binding=binding,
            old_wraps="retained" if from_byok else "destroyed",
            retain_until=retain_until,
            in_txn=in_txn,
        )
        # No DEK cache flush here: a DEK is the same key under its new wrap, and a cached key lives
        # no longer than the revocation bound anyway; a flush would only make the phases after
        # cutover unwrap every DEK again. Every process sees the new binding within
        # state_refresh_seconds (cutover invalidated this process's snapshot already).
        with rt.transaction() as s:
            from keyshift.jobs.context import merge_checkpoint

            merge_checkpoint(s, job.id, {"cutover": summary})

    def binding(self, rt: Runtime, job: Job, now: Any, retain_until: Any) -> dict[str, Any]:
        if self.kind == "link":
            b: dict[str, Any] = {
                "enc_mode": "cmk",
                "enc_managed_by": "customer_via_platform",
                "enc_status": "encrypted",
                "policy_id": job.policy_id,
                "linked_at": now,
            }
            if job.params.get("from_byok"):
                b["migrated_from_byok_at"] = now
                b["restore_until"] = retain_until
            return b
        if self.kind == "unlink":
            return {
                "enc_mode": "platform",
                "enc_managed_by": "platform",
                "enc_status": "encrypted",
                "policy_id": None,
                "linked_at": None,
            }
        if self.kind == "restore":
            return {
                "enc_mode": "byok",
                "enc_managed_by": "customer",
                "enc_status": "encrypted",
                "policy_id": None,
                "linked_at": None,
                "migrated_from_byok_at": None,
                "restore_until": None,
            }
        if self.kind == "swap":
            return {"policy_id": job.policy_id, "linked_at": now, "enc_status": "encrypted"}
        return {}  # rotate: only the key version moves

    def _step_settle(self, rt: Runtime, ctx: StepContext) -> None:
        """Every process must see the new layout before the legacy set is listed: a process reads
        an environment's layout at most `state_refresh_seconds` late, so wait twice that after
        the cutover (outside any transaction) — no write can land in the old store afterwards."""
        settle = 2 * rt.settings.state_refresh_seconds + 0.2
        wait = float(ctx.job.checkpoint.get("cut_wall", 0)) + settle - time.time()
        if wait > 0:
            time.sleep(min(wait, settle))
        with rt.transaction() as s:
            ctx.advance(s)

    def _step_move_sweep(self, rt: Runtime, ctx: StepContext) -> None:
        """Copy anything that reached the old store after the batches were planned (a write that
        was in flight at cutover), so ending the transition hides nothing."""
        from keyshift.migrate import moves

        swept = moves.sweep(rt, ctx)
        with rt.transaction() as s:
            ctx.advance(s, {"swept": swept})

    def _step_reencrypt_sweep(self, rt: Runtime, ctx: StepContext) -> None:
        from keyshift.migrate import reencrypt

        reencrypt.sweep(rt, ctx)

    def _step_finish(self, rt: Runtime, ctx: StepContext) -> None:
        job = ctx.job
        with rt.transaction() as s:
            env = s.get(Environment, job.environment_id, with_for_update=True)
            assert env is not None
            if any(job.params.get(k) for k in ("move_audit", "move_files", "return_audit", "return_files")):
                from keyshift.migrate import moves

                moves.end_transition(env, job.params.get("layout"))
                if self.kind == "link" and not job.params.get("from_byok"):
                    # no restore window for a non-BYOK environment: the SQL copy has no further use
                    moves.purge_sql_copy(s, env)
            finalized = None
            if self.kind == "restore":
                from keyshift.migrate import finalize

                finalize.unfinalize_tenant(rt, s, env.tenant_id)
                from keyshift.migrate import moves

                moves.drop_new_store_copies(rt, s, env.id, job.params, job.id)
                moves.settle_features(rt, s, env, job.id)
                from keyshift.migrate.restore import drop_retained_wraps

                drop_retained_wraps(s, env.id)
            elif job.params.get("from_byok"):
                from keyshift.migrate import finalize

                finalized = finalize.maybe_finalize_tenant(rt, s, env.tenant_id)
            audit_trail.record(
                rt,
                s,
                f"environment.{self.kind}",
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
                details={"job": job.id, "policy": env.policy_id, "tenant_finalized": bool(finalized)},
            )
            ctx.advance(s, {"finished": True, "tenant_finalized": bool(finalized)})


LINK_PLAN = KeyChangePlan("link")
UNLINK_PLAN = KeyChangePlan("unlink")
SWAP_PLAN = KeyChangePlan("swap")
ROTATE_PLAN = KeyChangePlan("rotate")
RESTORE_PLAN = KeyChangePlan("restore")
