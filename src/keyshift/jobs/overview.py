"""Where a job stands, for people: its phase among the plan's phases, a completed fraction that only
reads full once the job succeeded, and what may be done with it now (resume, cancel).

`items done / total` alone is misleading: a phase adds its items to the total only when it is
planned, so after the batched rewrap `done == total` while serial phases (cutover, settle, ...)
still run. The fraction here counts phases: (finished phases + share of the current phase's batches)
/ number of phases, kept below 1 until the job has succeeded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from keyshift.db.models import Job
from keyshift.errors import KeyshiftError
from keyshift.jobs.leases import phase_counts
from keyshift.jobs.plans import Phase, plan_for
from keyshift.jobs.store import FINAL_STATES

UNFINISHED_CAP = 0.99


def _phases(job: Job) -> list[Phase]:
    try:
        return list(plan_for(job.kind).phases(job))
    except KeyshiftError:  # a kind this build has no plan for: no phase information
        return []


def cancellable(job: Job) -> bool:
    if job.state in FINAL_STATES:
        return False
    try:
        return bool(plan_for(job.kind).cancellable(job))
    except KeyshiftError:
        return False


def overview(session: Session, job: Job) -> dict[str, Any]:
    phases = _phases(job)
    count = len(phases)
    index = min(job.phase, count)
    within = 0.0
    if index < count and phases[index].batched and job.phase_planned:
        counts = phase_counts(session, job.id, job.phase)
        total = sum(counts.values())
        within = counts.get("done", 0) / total if total else 0.0
    if job.state == "succeeded":
        fraction = 1.0
    elif count:
        fraction = min(UNFINISHED_CAP, (index + within) / count)
    else:
        fraction = 0.0
    current = phases[index].name if index < count else None
    return {
        "phase": (job.checkpoint or {}).get("phase_name") or current,
        "phase_number": index + 1 if index < count else count,
        "phase_count": count,
        "phase_names": [p.name for p in phases],
        "fraction": round(fraction, 4),
        "resumable": job.state == "failed",
        "cancellable": cancellable(job),
    }
