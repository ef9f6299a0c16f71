"""The data-plane tables as migrated (revision 0003) match the model metadata, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from keyshift.db.base import Base
from keyshift.runtime import Runtime

DATA_TABLES = {"data_records", "data_audit", "data_files", "data_file_chunks"}


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:] if isinstance(item, tuple) else ():
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if name in DATA_TABLES:
            return str(name)
        if isinstance(part, str) and part in DATA_TABLES:
            return part
    return None


def test_migrated_data_tables_match_the_models(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
        tables = set(ctx.bind.dialect.get_table_names(conn))  # type: ignore[union-attr]
    assert tables >= DATA_TABLES
    mine = [d for d in diffs if _table_of(d) in DATA_TABLES]
    assert mine == []
