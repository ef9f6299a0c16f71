"""What a job runs: a Plan is an ordered list of phases, each batched or a single serial step.

Plans live in keyshift.migrate and register here by kind (imported lazily, so jobs/ never imports
the migrations at module import time). A batched phase is planned once (under the job lease) into
batch specs; each batch runs idempotently and commits its effects together with `ctx.finish`.
A serial step commits its effects together with `ctx.advance`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from keyshift.errors import InternalError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from keyshift.db.models import Job
    from keyshift.jobs.context import BatchContext, StepContext
    from keyshift.runtime import Runtime


@dataclass(frozen=True)
class Phase:
    name: str
    batched: bool = False


class Plan(Protocol):
    kind: str

    def phases(self, job: Job) -> list[Phase]: ...

    def plan_phase(self, rt: Runtime, session: Session, job: Job, phase: Phase) -> list[dict[str, Any]]:
        """Batch specs of a batched phase (called once, under the job lease, in a transaction)."""
        ...

    def run_batch(self, rt: Runtime, ctx: BatchContext) -> None:
        """Do one batch; must call ctx.finish(session, items, bytes) in the effects' transaction."""
        ...

    def run_step(self, rt: Runtime, ctx: StepContext) -> None:
        """Do one serial step; must call ctx.advance(session) in the effects' transaction."""
        ...

    def cancellable(self, job: Job) -> bool: ...

    def rollback(self, rt: Runtime, session: Session, job: Job) -> None:
        """Undo what a cancelled job started (called in the cancelling transaction)."""
        ...


PLANS: dict[str, str] = {
    "link": "keyshift.migrate.keychange:LINK_PLAN",
    "unlink": "keyshift.migrate.keychange:UNLINK_PLAN",
    "swap": "keyshift.migrate.keychange:SWAP_PLAN",
    "rotate": "keyshift.migrate.keychange:ROTATE_PLAN",
    "restore": "keyshift.migrate.keychange:RESTORE_PLAN",
    "relayout": "keyshift.migrate.relayout:RELAYOUT_PLAN",
    "search_rebuild": "keyshift.features.search_jobs:REBUILD_PLAN",
}

_EXTRA: dict[str, Plan] = {}


def register_plan(plan: Plan) -> None:
    """Register a plan object directly (tests register small plans of their own)."""
    _EXTRA[plan.kind] = plan


def plan_for(kind: str) -> Plan:
    if kind in _EXTRA:
        return _EXTRA[kind]
    target = PLANS.get(kind)
    if target is None:
        raise InternalError(f"no plan for job kind {kind!r}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
