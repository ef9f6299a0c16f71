"""Appending many stored audit events at once (a move's batch): one transaction, insert-if-absent.

A move copies events in batches; appending them one transaction each made the document store
(an fsync per commit on its embedded SQLite file) the bottleneck, about a millisecond per event.
Here a batch is a few multi-row INSERT ... ON CONFLICT (event_id) DO NOTHING statements in one
transaction: an event already in the target (a rerun after a crash) is skipped by the database,
and a crash before the commit leaves none of the batch behind (the rerun copies it whole).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from keyshift.db.models import DataAuditRow
from keyshift.runtime import Runtime
from keyshift.stores.docstore import as_doc, audit_events, document_store

# (event id, time, DEK id as hex, blob)
StoredBlob = tuple[str, datetime, str, bytes]

ROWS_PER_STATEMENT = 500  # x 5 columns: far below SQLite's bound-parameter limit

_SQL: Table = DataAuditRow.__table__  # type: ignore[assignment]


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _insert_ignoring_dupes(conn: Any, table: Table, values: list[dict[str, Any]]) -> int:
    """Insert the rows, skipping event ids already there; returns how many were inserted. One
    statement built once per (dialect, table), executed with many parameter sets (SQLAlchemy
    batches them into multi-row INSERTs; RETURNING counts the inserted rows on every driver)."""
    if not values:
        return 0
    dialect = conn.dialect.name
    stmt = _STATEMENTS.get((dialect, table.name))
    if stmt is None:
        if dialect == "postgresql":
            base: Any = postgresql.insert(table)
        elif dialect == "sqlite":
            base = sqlite.insert(table)
        else:  # pragma: no cover - the two supported databases are above
            raise NotImplementedError(dialect)
        stmt = base.on_conflict_do_nothing(index_elements=["event_id"]).returning(table.c.event_id)
        _STATEMENTS[(dialect, table.name)] = stmt
    return len(conn.execute(stmt, values).all())


def _rows(backend: str, env_id: str, events: Sequence[StoredBlob]) -> list[dict[str, Any]]:
    if backend == "document":
        return [
            {"environment_id": env_id, "event_id": e, "at": at, "doc": as_doc(dek, blob)}
            for e, at, dek, blob in events
        ]
    return [
        {"environment_id": env_id, "event_id": e, "at": at, "dek_id": dek, "payload": blob}
        for e, at, dek, blob in events
    ]


def append_if_absent(
    rt: Runtime,
    backend: str,
    env_id: str,
    events: Sequence[StoredBlob],
    *,
    point: Callable[[str], None] | None = None,
) -> int:
    """Append `events` (in order) to the `backend` ("document" or "sql") audit store of `env_id`
    in one transaction, skipping any already there. Returns how many were appended. `point` is
    called once in the middle, before the commit ("move:mid-batch": tests crash there)."""
    rows = _rows(backend, env_id, events)
    half = len(rows) // 2
    parts = [rows[i : i + ROWS_PER_STATEMENT] for i in range(0, half, ROWS_PER_STATEMENT)]
    rest = [rows[i : i + ROWS_PER_STATEMENT] for i in range(half, len(rows), ROWS_PER_STATEMENT)]

    def write(conn: Any, table: Table) -> int:
        n = sum(_insert_ignoring_dupes(conn, table, p) for p in parts)
        if point is not None:
            point("move:mid-batch")
        return n + sum(_insert_ignoring_dupes(conn, table, p) for p in rest)

    if backend == "document":
        with document_store(rt).engine.begin() as conn:
            return write(conn, audit_events)
    with rt.transaction() as s:
        return write(s.connection(), _SQL)
