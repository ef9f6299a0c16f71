"""The migrated schema of the local vault tables matches the SQLAlchemy models (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from keyshift.db.base import Base
from keyshift.runtime import Runtime

TABLES = {"local_keys", "local_key_versions", "local_key_grants"}


def _table_of(diff: Any) -> str | None:
    if isinstance(diff, list):  # column modifications come grouped
        return _table_of(diff[0])
    for item in diff[1:]:
        name = getattr(item, "name", None) if hasattr(item, "columns") or hasattr(item, "c") else None
        table = getattr(item, "table", None)
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if name:
            return str(name)
        if isinstance(item, str) and item in TABLES:
            return item
    return None


def test_migrated_local_vault_tables_match_models(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
        present = set(inspect(conn).get_table_names())
    assert present >= TABLES
    mine = [d for d in diffs if _table_of(d) in TABLES]
    assert mine == []
