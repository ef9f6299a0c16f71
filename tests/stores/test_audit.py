"""Audit events: document store (SQLite file / PostgreSQL JSONB) and the SQL layout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from keyshift.clock import FixedClock
from keyshift.db.models import AdminAuditEvent, DataAuditRow
from keyshift.errors import ConflictError, IntegrityError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.docstore import document_store
from stores.helpers import make_env, set_env, snapshot


@pytest.fixture
def drt(rt: Runtime, db_url: str | None) -> Runtime:
    """The runtime with its document store on the same backend as the state DB (JSONB on PG)."""
    if db_url is not None:
        rt.settings = rt.settings.model_copy(update={"document_store_url": db_url})
    return rt


def _doc_rows(rt: Runtime, env_id: str) -> list[tuple[object, ...]]:
    with document_store(rt).engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_events WHERE environment_id = :e"), {"e": env_id})
        return sorted((tuple(r) for r in rows), key=repr)


@pytest.mark.parametrize("layout", ["document", "sql"])
def test_append_and_query_in_time_order(drt: Runtime, clock: FixedClock, layout: str) -> None:
    env_id = make_env(drt, stores={"records": "sql", "audit": layout, "files": "sql"})
    log = AuditLog(drt, env_id)
    t0 = clock.now()
    ids = []
    for i in range(5):
        ids.append(log.append({"action": "login", "user": f"u{i}", "secret": "pa55word-xyz"}))
        clock.advance(minutes=1)
    got = log.query()
    assert [e["id"] for e in got] == ids
    assert got[2]["event"] == {"action": "login", "user": "u2", "secret": "pa55word-xyz"}
    window = log.query(since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=3))
    assert [e["event"]["user"] for e in window] == ["u1", "u2"]
    assert len(log.query(limit=2)) == 2
    if layout == "sql":
        raw = repr(snapshot(drt, "data_audit", env_id=env_id)).encode()
        assert _doc_rows(drt, env_id) == []
    else:
        raw = repr(_doc_rows(drt, env_id)).encode()
        assert snapshot(drt, "data_audit", env_id=env_id)["data_audit"] == []
    assert b"pa55word-xyz" not in raw and b"login" not in raw


def test_document_store_uses_jsonb_on_postgresql(drt: Runtime, db_url: str | None) -> None:
    env_id = make_env(drt)
    AuditLog(drt, env_id).append({"a": 1})
    engine = document_store(drt).engine
    if db_url is None:
        assert str(engine.url).endswith("audit.db")
        assert (drt.settings.home_path() / "audit.db").exists()
    else:
        with engine.connect() as conn:
            kind = conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() "
                    "AND table_name='audit_events' AND column_name='doc'"
                )
            ).scalar_one()
        assert kind == "jsonb"


def test_bad_events_are_refused_and_nothing_is_written(drt: Runtime) -> None:
    env_id = make_env(drt, stores={"records": "sql", "audit": "sql", "files": "sql"})
    log = AuditLog(drt, env_id)
    log.append({"ok": True})
    before = snapshot(drt, "data_audit", "deks", env_id=env_id)
    for bad in (
        ["not", "an", "object"],
        "text",
        {"x": {1, 2}},
        {"x": float("nan")},
        {"big": "x" * (1 << 20)},
    ):
        with pytest.raises(UsageError):
            log.append(bad)  # type: ignore[arg-type]
    for kwargs in ({"limit": 0}, {"limit": 10_001}, {"since": "yesterday"}):
        with pytest.raises(UsageError):
            log.query(**kwargs)  # type: ignore[arg-type]
    assert snapshot(drt, "data_audit", "deks", env_id=env_id) == before


def test_tampered_or_moved_event_is_an_integrity_error_naming_it(drt: Runtime, clock: FixedClock) -> None:
    env_id = make_env(drt, stores={"records": "sql", "audit": "sql", "files": "sql"})
    log = AuditLog(drt, env_id)
    first = log.append({"n": 1})
    clock.advance(seconds=5)
    log.append({"n": 2})
    with drt.transaction() as s:
        s.execute(
            update(DataAuditRow)
            .where(DataAuditRow.event_id == first)
            .values(at=clock.now() + timedelta(days=1))
        )
    with pytest.raises(IntegrityError) as err:
        log.query()
    assert first in err.value.message


def test_purge_needs_the_audit_retention_feature(drt: Runtime, clock: FixedClock) -> None:
    env_id = make_env(drt)
    log = AuditLog(drt, env_id)
    log.append({"old": True})
    clock.advance(days=40)
    log.append({"new": True})
    with pytest.raises(ConflictError) as err:
        log.purge_older_than(30)
    assert err.value.code == "feature_not_enabled"
    assert len(log.query()) == 2
    set_env(drt, env_id, features=["audit-retention"])
    from keyshift.stores.envstate import env_states

    env_states(drt).invalidate(env_id)
    assert log.purge_older_than(30) == 1
    assert [e["event"] for e in log.query()] == [{"new": True}]
    with drt.transaction() as s:
        outcomes = list(
            s.scalars(
                select(AdminAuditEvent.outcome).where(
                    AdminAuditEvent.action == "audit.purge", AdminAuditEvent.target_id == env_id
                )
            )
        )
    assert sorted(outcomes) == ["error", "ok"]


def test_transition_writes_new_store_and_queries_see_the_union(drt: Runtime, clock: FixedClock) -> None:
    env_id = make_env(drt, stores={"records": "sql", "audit": "sql", "files": "sql"})
    log = AuditLog(drt, env_id)
    old = []
    for i in range(3):
        clock.advance(seconds=1)
        old.append(log.append({"n": i}))
    set_env(drt, env_id, stores={"records": "sql", "audit": "document", "audit_from": "sql", "files": "sql"})
    from keyshift.stores.envstate import env_states

    env_states(drt).invalidate(env_id)
    # A mover copies one legacy event across (same id and time): it must not show up twice.
    moved = log.query(limit=1)[0]
    from keyshift.clock import parse_time

    log.append(moved["event"], event_id=moved["id"], at=parse_time(moved["at"]))
    clock.advance(seconds=1)
    new = log.append({"n": 3})
    got = log.query()
    assert [e["id"] for e in got] == [*old, new]
    assert len(snapshot(drt, "data_audit", env_id=env_id)["data_audit"]) == 3  # legacy rows untouched
    assert len(_doc_rows(drt, env_id)) == 2
