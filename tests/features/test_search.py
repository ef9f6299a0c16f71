"""Blind search index: tokens only, kept in step with writes, generations rebuilt by jobs while the
old one answers, a new search key after a swap/re-encryption, and every refusal leaving state alone."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

import keyshift.features  # noqa: F401  (registers the feature hook)
from features.helpers import make_env, snapshot
from keyshift.db.models import Dek, Job, SearchIndex
from keyshift.db.types import new_id
from keyshift.errors import ConflictError, UsageError
from keyshift.features import search, search_jobs
from keyshift.jobs.runner import Worker
from keyshift.jobs.store import request_cancel
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore

ROWS = {
    "a1": {"name": "Fabrikam Inc", "city": "Paris", "tags": ["Gold", "retail"], "secret": "zebra"},
    "a2": {"name": "Contoso Ltd", "city": "PARIS", "address": {"street": "Rue Énorme"}},
    "a3": {"name": "Northwind Traders", "city": "Oslo", "n": 42},
}


def _ids(out: dict) -> list[str]:
    return [r["id"] for r in out["results"]]


def _indexed(rt: Runtime, fields: list[str] | None = None) -> tuple[str, RecordStore]:
    env = make_env(rt)
    rs = RecordStore(rt, env)
    rs.put_many("accounts", list(ROWS.items()))
    view = search_jobs.set_fields(
        rt, "contoso-prod", "accounts", fields or ["name", "city", "tags", "address.street", "n"]
    )
    assert Worker(rt).run_job(view["job"]) == "succeeded"
    return env, rs


def test_search_finds_all_words_and_fetches_decrypted_records(rt: Runtime) -> None:
    env, _ = _indexed(rt)
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "Paris CONTOSO")) == ["a2"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "énorme")) == ["a2"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "gold")) == ["a1"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "42")) == ["a3"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "zebra")) == []  # not a searchable field
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris", limit=1)) == ["a1"]
    out = search.search(rt, "contoso-prod", "accounts", "oslo")
    assert out["results"][0]["value"] == ROWS["a3"]
    # Postings hold only tokens; the search key is a DEK of store "search" of the environment.
    with rt.engine.connect() as conn:
        rows = conn.execute(text("select * from search_postings")).all()
        meta = conn.execute(text("select * from search_indexes")).all()
    assert rows
    blob = b"".join(repr(tuple(r)).encode() for r in rows + meta).lower()
    for word in (b"paris", b"fabrikam", b"contoso", b"gold", b"enorme", b"northwind", b"oslo"):
        assert word not in blob
    assert all(len(bytes(r[1])) == 16 for r in rows)
    with rt.transaction() as s:
        g = s.scalars(select(SearchIndex).where(SearchIndex.environment_id == env)).one()
        dek = s.get(Dek, g.dek_id)
        assert dek is not None and dek.store == "search" and dek.environment_id == env


def test_index_follows_puts_and_deletes(rt: Runtime) -> None:
    _, rs = _indexed(rt)
    rs.put("accounts", "a4", {"name": "Paris Bakery", "city": "Lyon"})
    rs.put("accounts", "a1", {"name": "Fabrikam Inc", "city": "Berlin"})  # a1 leaves Paris
    rs.delete("accounts", "a2")
    rs.put_many("accounts", [("a5", {"name": "x", "city": "paris"}), ("a6", b"raw bytes")])
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a4", "a5"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "berlin")) == ["a1"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "contoso")) == []


def test_new_fields_rebuild_while_the_old_generation_answers(rt: Runtime) -> None:
    _, rs = _indexed(rt, ["city"])
    view = search_jobs.set_fields(rt, "contoso-prod", "accounts", ["name"])
    assert view["state"] == "building" and view["generation"] == 2
    # Not built yet: the old generation (city) keeps answering, and writes reach both.
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2"]
    rs.put("accounts", "a7", {"name": "Late Write", "city": "Paris"})
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2", "a7"]
    assert Worker(rt).run_job(view["job"]) == "succeeded"
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == []
    assert _ids(search.search(rt, "contoso-prod", "accounts", "late")) == ["a7"]
    assert _ids(search.search(rt, "contoso-prod", "accounts", "traders")) == ["a3"]
    with rt.transaction() as s:
        states = sorted(g.state for g in s.scalars(select(SearchIndex)))
    assert states == ["active", "retired"]
    # A cancelled rebuild leaves the active generation answering and drops the half-built one.
    third = search_jobs.set_fields(rt, "contoso-prod", "accounts", ["city"])
    request_cancel(rt, third["job"])
    assert Worker(rt).run_job(third["job"]) == "cancelled"
    assert _ids(search.search(rt, "contoso-prod", "accounts", "late")) == ["a7"]
    with rt.transaction() as s:
        states = sorted(g.state for g in s.scalars(select(SearchIndex)))
        left = s.execute(text("select count(*) from search_postings")).scalar_one()
        active = s.scalars(select(SearchIndex.id).where(SearchIndex.state == "active")).one()
        mine = s.execute(
            text("select count(*) from search_postings where index_id = :i"), {"i": active}
        ).scalar_one()
    assert states == ["active", "retired", "retired"] and left == mine


def test_rekey_replaces_the_search_key_and_rebuilds(rt: Runtime) -> None:
    _indexed(rt)
    with rt.engine.connect() as conn:
        before = {bytes(r[0]) for r in conn.execute(text("select token from search_postings"))}
    old_dek = search_jobs.describe(rt, "contoso-prod")
    views = search_jobs.rekey(rt, "contoso-prod")
    assert len(views) == 1
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2"]  # old answers
    assert Worker(rt).run_job(views[0]["job"]) == "succeeded"
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2"]
    with rt.engine.connect() as conn:
        after = {bytes(r[0]) for r in conn.execute(text("select token from search_postings"))}
    assert after and not (after & before)  # every token changed with the key
    with rt.transaction() as s:
        deks = {d.id: d.state for d in s.scalars(select(Dek).where(Dek.store == "search"))}
    assert sorted(deks.values()) == ["active", "retired"]
    assert old_dek[0]["generation"] == 1


def test_maintenance_rekeys_after_a_swap(rt: Runtime) -> None:
    env, _ = _indexed(rt)
    assert search_jobs.rekey_due(rt) == {"rebuild_jobs": [], "errors": {}}
    rt.clock.advance(minutes=1)  # type: ignore[attr-defined]
    with rt.transaction() as s:  # a finished swap job row (the input rekey_due looks at)
        s.add(
            Job(
                id=new_id("job"),
                kind="swap",
                state="succeeded",
                environment_id=env,
                params={},
                checkpoint={},
                created_at=rt.clock.now(),
                finished_at=rt.clock.now(),
            )
        )
    out = search_jobs.rekey_due(rt)
    assert len(out["rebuild_jobs"]) == 1
    assert search_jobs.rekey_due(rt)["rebuild_jobs"] == []  # already rebuilding
    assert Worker(rt).run_job(out["rebuild_jobs"][0]) == "succeeded"
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2"]


def test_bad_searches_are_refused_and_change_nothing(rt: Runtime) -> None:
    env = make_env(rt)
    RecordStore(rt, env).put("accounts", "a1", ROWS["a1"])
    before = snapshot(rt)
    with pytest.raises(ConflictError) as e:
        search.search(rt, "contoso-prod", "accounts", "paris")
    assert e.value.code == "no_searchable_fields" and e.value.exit_code == 4
    for bad in ("", "   ", "!!!"):
        with pytest.raises(UsageError):
            search.search(rt, "contoso-prod", "accounts", bad)
    with pytest.raises(UsageError):
        search.search(rt, "contoso-prod", "accounts", "paris", limit=0)
    for fields in ([], ["bad field"], ["a..b"], [f"f{i}" for i in range(40)]):
        with pytest.raises(UsageError):
            search_jobs.set_fields(rt, "contoso-prod", "accounts", fields)
    with pytest.raises(UsageError):
        search_jobs.set_fields(rt, "contoso-prod", "../etc", ["name"])
    assert snapshot(rt) == before


def test_refused_without_the_feature_and_under_the_sql_restriction(rt: Runtime) -> None:
    make_env(rt, features=[])
    make_env(rt, "legacy-prod", tenant="legacy", byok=True)
    before = snapshot(rt)
    with pytest.raises(ConflictError) as e:
        search_jobs.set_fields(rt, "contoso-prod", "accounts", ["name"])
    assert e.value.code == "feature_not_enabled"
    for call in (
        lambda: search_jobs.set_fields(rt, "legacy-prod", "accounts", ["name"]),
        lambda: search.search(rt, "legacy-prod", "accounts", "x"),
    ):
        with pytest.raises(ConflictError) as e:
            call()
        assert e.value.code == "sql_restriction"
        assert "SQL restriction" in e.value.message
    assert snapshot(rt) == before
    with rt.engine.connect() as conn:
        refusals = conn.execute(
            text(
                "select count(*) from admin_audit where outcome = 'error' and reason like 'sql_restriction%'"
            )
        ).scalar_one()
    assert refusals == 2


def test_writes_during_a_rebuild_end_up_indexed_exactly(rt: Runtime) -> None:
    """A writer keeps changing records while the rebuild job runs: afterwards every query answers
    exactly what the records hold (no stale posting from a batch, no write missed)."""
    import contextlib
    import random
    import threading
    import time

    from keyshift.errors import NotFoundError

    env = make_env(rt)
    rs = RecordStore(rt, env)
    cities = ["oslo", "paris", "rome", "lima"]
    rs.put_many("t", [(f"r{i:03d}", {"city": cities[i % 4]}) for i in range(300)])
    view = search_jobs.set_fields(rt, "contoso-prod", "t", ["city"])
    with rt.transaction() as s:  # small batches: many interleavings with the writer
        job = s.get(Job, view["job"])
        assert job is not None
        job.params = {**job.params, "row_batch": 10}
    stop = threading.Event()
    writes = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        rng = random.Random(5)
        try:
            while not stop.is_set():
                rid = f"r{rng.randrange(320):03d}"
                if rng.random() < 0.1:
                    with contextlib.suppress(NotFoundError):
                        rs.delete("t", rid)
                else:
                    rs.put("t", rid, {"city": rng.choice(cities)})
                writes[0] += 1
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while writes[0] < 5 and thread.is_alive():
            time.sleep(0.001)
        at_start = writes[0]
        assert Worker(rt, poll_seconds=0.01).run_job(view["job"]) == "succeeded"
        during = writes[0] - at_start
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert during > 0  # the writer really ran while the job did
    truth: dict[str, list[str]] = {c: [] for c in cities}
    for rec in rs.iter_all("t"):
        truth[rec.value["city"]].append(rec.id)
    for c in cities:
        assert _ids(search.search(rt, "contoso-prod", "t", c, limit=1000)) == sorted(truth[c])


def test_a_failed_rebuild_resumes_where_it_stopped(sqlite_rt: Runtime) -> None:
    from keyshift.db.models import Environment
    from keyshift.jobs.store import resume
    from keyshift.stores.envstate import env_states

    rt = sqlite_rt
    env, _ = _indexed(rt, ["city"])
    view = search_jobs.set_fields(rt, "contoso-prod", "accounts", ["name"])
    with rt.transaction() as s:  # the environment goes down (say, its key was revoked) mid-job
        s.get(Environment, env).state = "disabled"  # type: ignore[union-attr]
    env_states(rt).invalidate()
    assert Worker(rt).run_job(view["job"]) == "failed"
    with rt.transaction() as s:
        s.get(Environment, env).state = "enabled"  # type: ignore[union-attr]
    env_states(rt).invalidate()
    assert _ids(search.search(rt, "contoso-prod", "accounts", "paris")) == ["a1", "a2"]  # old one answers
    resume(rt, view["job"])
    assert Worker(rt).run_job(view["job"]) == "succeeded"
    assert _ids(search.search(rt, "contoso-prod", "accounts", "traders")) == ["a3"]
