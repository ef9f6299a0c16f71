"""The job machinery on its own (toy plan): state machine, leases, exactly-once batches."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from keyshift.db.base import Base
from keyshift.errors import ConflictError
from keyshift.jobs import leases, store
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

from . import toy

MY_TABLES = {"jobs", "job_batches"}


def _new_job(rt: Runtime, **params: object) -> str:
    with rt.transaction() as session:
        return store.create_job(rt, session, "toy", params=dict(params)).id


def _view(rt: Runtime, job_id: str) -> dict:
    with rt.transaction() as session:
        return store.to_view(store.find_job(session, job_id))


def test_migrated_schema_matches_metadata_for_job_tables(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)

    def table_of(diff: object) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        for part in item[1:]:  # type: ignore[index]
            name = getattr(part, "name", None) if not isinstance(part, str) else None
            table = getattr(part, "table", None)
            if table is not None:
                return table.name  # type: ignore[no-any-return]
            if name in MY_TABLES:
                return name
            if isinstance(part, str) and part in MY_TABLES:
                return part
        return None

    mine = [d for d in diffs if table_of(d) in MY_TABLES]
    assert mine == []


def test_job_runs_every_item_exactly_once_and_reports_progress(rt: Runtime) -> None:
    job_id = _new_job(rt, items=10, batch=3)
    assert _view(rt, job_id)["state"] == "pending"
    seen: list[dict] = []
    state = Worker(rt, on_progress=seen.append).run_job(job_id)
    assert state == "succeeded"
    view = _view(rt, job_id)
    assert (view["done"], view["total"]) == (20, 20)  # two batched phases of 10
    assert view["bytes_done"] == 200
    assert view["error"] is None and view["finished_at"] is not None
    counts = Counter(toy.effects(rt, job_id))
    assert len(counts) == 20 and set(counts.values()) == {1}
    assert seen and seen[-1]["state"] == "succeeded"


def test_running_job_holds_the_environment(rt: Runtime) -> None:
    with rt.transaction() as session:
        job = store.create_job(rt, session, "toy", environment_id="env_x")
        assert store.running_job_for(session, "env_x").id == job.id  # type: ignore[union-attr]
        assert store.running_job_for(session, "env_y") is None
        with pytest.raises(ConflictError) as exc:
            store.create_job(rt, session, "toy", environment_id="env_x")
        assert exc.value.code == "job_running"


def test_four_threads_on_one_job_do_no_batch_twice(rt: Runtime) -> None:
    job_id = _new_job(rt, items=40, batch=2, delay=0.001)
    workers = [Worker(rt, poll_seconds=0.01) for _ in range(4)]
    threads = [threading.Thread(target=w.run_job, args=(job_id,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert _view(rt, job_id)["state"] == "succeeded"
    counts = Counter(toy.effects(rt, job_id))
    assert len(counts) == 80 and set(counts.values()) == {1}


def test_expired_lease_is_taken_over_and_the_late_finisher_loses(rt: Runtime) -> None:
    job_id = _new_job(rt, items=4, batch=2)
    w = Worker(rt)
    w.step(job_id)  # pending -> running
    w.step(job_id)  # plan phase 0
    t0 = datetime.now(UTC)
    with rt.transaction() as s:
        a = leases.claim_batch(s, job_id, 0, "A", 5, t0)
    assert a is not None and a.seq == 0
    with rt.transaction() as s:  # B cannot take A's live batch: it gets the next one
        b = leases.claim_batch(s, job_id, 0, "B", 5, t0 + timedelta(seconds=1))
    assert b is not None and b.seq == 1
    with rt.transaction() as s:  # after expiry C takes batch 0 over
        c = leases.claim_batch(s, job_id, 0, "C", 5, t0 + timedelta(seconds=6))
    assert c is not None and c.seq == 0
    with pytest.raises(leases.LeaseLost), rt.transaction() as s:
        leases.finish_batch(s, a, 2, 0, t0 + timedelta(seconds=7))
    with rt.transaction() as s:
        leases.finish_batch(s, c, 2, 0, t0 + timedelta(seconds=7))
        assert leases.phase_counts(s, job_id, 0) == {"done": 1, "leased": 1}


def test_failure_stops_the_job_with_the_reason_and_resume_continues(rt: Runtime, tmp_path: Path) -> None:
    flag = tmp_path / "vault-down"
    flag.write_text("1")
    job_id = _new_job(rt, items=9, batch=3, fail_at=4, fail_flag=str(flag))
    assert Worker(rt).run_job(job_id) == "failed"
    view = _view(rt, job_id)
    assert view["error"]["code"] == "vault_unavailable"
    assert view["done"] == 3  # the first batch committed, the failing one did not
    flag.unlink()
    assert store.resume(rt, job_id)["state"] == "running"
    assert Worker(rt).run_job(job_id) == "succeeded"
    counts = Counter(toy.effects(rt, job_id))
    assert len(counts) == 18 and set(counts.values()) == {1}
    assert _view(rt, job_id)["attempts"] == 2


def test_resume_refuses_a_job_that_is_not_failed(rt: Runtime) -> None:
    job_id = _new_job(rt, items=2)
    before = _view(rt, job_id)
    with pytest.raises(ConflictError) as exc:
        store.resume(rt, job_id)
    assert exc.value.code == "job_not_failed" and exc.value.exit_code == 4
    assert _view(rt, job_id) == before
    from keyshift.control import audit_trail

    refused = [e for e in audit_trail.query(rt) if e["action"] == "job.resume"]
    assert refused and refused[-1]["outcome"] == "error" and refused[-1]["target"]["id"] == job_id


def test_cancel_before_cutover_rolls_back_and_after_cutover_is_refused(rt: Runtime) -> None:
    job_id = _new_job(rt, items=3)
    assert store.request_cancel(rt, job_id)["state"] == "cancelled"
    with pytest.raises(ConflictError):
        store.request_cancel(rt, job_id)

    job2 = _new_job(rt, items=3)
    w = Worker(rt)
    while _view(rt, job2)["phase"] != "tail":
        w.step(job2)
    with pytest.raises(ConflictError) as exc:
        store.request_cancel(rt, job2)
    assert exc.value.code == "job_not_cancellable"
    assert w.run_job(job2) == "succeeded"


def test_cancel_of_a_running_job_stops_at_the_next_batch(rt: Runtime) -> None:
    job_id = _new_job(rt, items=30, batch=1)
    w = Worker(rt)
    for _ in range(4):
        w.step(job_id)
    assert store.request_cancel(rt, job_id)["state"] == "running"
    assert w.run_job(job_id) == "cancelled"
    assert len(toy.effects(rt, job_id)) < 30


def _child(home: str, url: str | None, lease: float) -> None:
    try:
        with Runtime.open(home=home, database_url=url, principal="operator:toy-worker") as crt:
            Worker(crt, lease_seconds=lease, poll_seconds=0.02).run_once()
    except BaseException:
        os._exit(3)
    os._exit(0)


def _spawn(home: Path, url: str | None, lease: float) -> multiprocessing.process.BaseProcess:
    """A worker in its own OS process (forked, so no interpreter start-up per trial)."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(str(home), url, lease))
    proc.start()
    return proc


def test_kill_9_workers_at_random_points_loses_and_duplicates_nothing(
    rt: Runtime, home: Path, db_url: str | None
) -> None:
    rng = random.Random(1234)
    # ~2.4 s of item work (120 items): more than the longest wait before a kill, so the first round always
    # finds its victim alive (a faster job could finish unkilled and prove nothing)
    job_id = _new_job(rt, items=60, batch=2, delay=0.02)
    kills = 0
    deadline = time.monotonic() + 40
    while _view(rt, job_id)["state"] != "succeeded" and time.monotonic() < deadline:
        procs = [_spawn(home, db_url, 0.4) for _ in range(2)]
        time.sleep(rng.uniform(0.2, 0.6))
        victim = rng.choice(procs)
        if victim.is_alive():
            victim.kill()  # SIGKILL
            kills += 1
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    assert _view(rt, job_id)["state"] == "succeeded"
    assert kills >= 1
    counts = Counter(toy.effects(rt, job_id))
    assert len(counts) == 120, "an item was skipped"
    assert set(counts.values()) == {1}, "an item was done twice"


def test_a_worker_runs_the_health_monitor_between_batches_and_its_failure_never_fails_the_job(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keyshift worker` (health_between_batches): a long job does not hold the monitor off."""
    from keyshift.control import monitor

    calls: list[int] = []

    def due(_rt: Runtime) -> dict[str, str]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("monitor round broke")
        return {"skipped": "not due"}

    monkeypatch.setattr(monitor, "monitor_due", due)
    job_id = _new_job(rt, items=9, batch=3)
    assert Worker(rt, health_between_batches=True).run_job(job_id) == "succeeded"
    assert len(calls) == 6  # after each of the 3 + 3 batches of the two batched phases
    assert len(Counter(toy.effects(rt, job_id))) == 18
    calls.clear()
    job_id = _new_job(rt, items=9, batch=3)
    assert Worker(rt).run_job(job_id) == "succeeded"  # the default (SDK, CLI job run): not run
    assert calls == []
