"""The migrated api_tokens table equals the model's metadata, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from keyshift.db.models import Base
from keyshift.runtime import Runtime

MY_TABLES = {"api_tokens"}


def _tables_named(diff: object) -> set[str]:
    """Every table name a compare_metadata diff entry mentions (tuples, lists, Table/Column/Index)."""
    out: set[str] = set()
    stack = [diff]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str):
            out.add(item)
        else:
            for obj in (item, getattr(item, "table", None)):
                name = getattr(obj, "name", None)
                if isinstance(name, str):
                    out.add(name)
    return out


def test_migrated_api_tokens_table_matches_metadata(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    mine = [d for d in diffs if _tables_named(d) & MY_TABLES]
    assert mine == []
    with rt.engine.connect() as conn:
        assert "api_tokens" in rt.engine.dialect.get_table_names(conn)
