"""An audit move copies each batch in one transaction, insert-if-absent (stores/audit_bulk.py):
a crash inside a batch leaves none of it in the target, the rerun copies it exactly once, and
events already there are skipped whichever store (document store, SQL) receives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from keyshift.control import tenants
from keyshift.db.models import DataAuditRow
from keyshift.jobs import store
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.audit_bulk import append_if_absent
from keyshift.stores.docstore import audit_events, document_store
from keyshift.stores.keys import data_keys

from .helpers import byok_world, customer_key, fill, make_policy, read_all, run


class Crash(BaseException):
    """Stands for the process dying at that point (not an error the worker would record)."""


def _doc_count(rt: Runtime, env_id: str) -> int:
    t = audit_events
    with document_store(rt).engine.begin() as conn:
        return int(conn.execute(select(func.count()).where(t.c.environment_id == env_id)).scalar_one())


def _sql_count(rt: Runtime, env_id: str) -> int:
    with rt.transaction() as s:
        here = DataAuditRow.environment_id == env_id
        return int(s.scalar(select(func.count()).select_from(DataAuditRow).where(here)) or 0)


def test_a_crash_inside_an_audit_batch_leaves_none_of_it_and_the_rerun_copies_each_once(
    rt: Runtime, tmp_path: Path
) -> None:
    w = byok_world(rt, tmp_path, envs=("bulk",))
    env_id = w["envs"]["bulk"]
    data = fill(rt, env_id, rows=3, events=40)
    vault, key = customer_key(rt, "bulk-kv", "bulk-cmk")
    make_policy(rt, w["tenant"], "bulk-pol", vault, key)
    tenants.byok_flag_remove(rt, w["tenant"], ticket="SR-1")
    view = start_link(rt, "bulk-pol", "bulk")
    with rt.transaction() as s:
        j = store.find_job(s, view["id"])
        j.params = {**j.params, "audit_batch": 40}  # the whole audit move in one batch

    def crash(name: str) -> None:
        if name == "move:mid-batch":
            raise Crash

    with pytest.raises(Crash):
        Worker(rt, poll_seconds=0.01, hooks={"point": crash}).run_job(view["id"])
    assert _doc_count(rt, env_id) == 0  # half of the batch was appended, none committed
    data_keys(rt).flush()
    assert run(rt, view["id"]) == "succeeded"
    assert _doc_count(rt, env_id) == 40
    assert read_all(rt, env_id)["events"] == data["events"]  # each exactly once (read_all checks)


@pytest.mark.parametrize("backend", ["document", "sql"])
def test_append_if_absent_skips_events_already_there(rt: Runtime, backend: str) -> None:
    env_id = "env_bulktest"
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    events = [(f"evt_{i:04d}", at + timedelta(seconds=i), "ab" * 16, bytes([i]) * 40) for i in range(30)]
    count = _doc_count if backend == "document" else _sql_count
    marks: list[str] = []
    assert append_if_absent(rt, backend, env_id, events[:12], point=marks.append) == 12
    assert marks == ["move:mid-batch"]
    assert append_if_absent(rt, backend, env_id, events) == 18  # the first 12 are skipped
    assert append_if_absent(rt, backend, env_id, events[5:20]) == 0
    assert count(rt, env_id) == 30
