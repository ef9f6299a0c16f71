"""The feature-storage tables as migrated (revision 0006) match the model metadata, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from keyshift.db.base import Base
from keyshift.runtime import Runtime

MY_TABLES = {"search_indexes", "search_postings", "lake_exports", "backups"}


def _tables_of(diff: object) -> set[str]:
    item = diff[0] if isinstance(diff, list) else diff
    out: set[str] = set()
    for part in item[1:] if isinstance(item, tuple) else ():
        table = getattr(part, "table", None)
        if table is not None and getattr(table, "name", None):
            out.add(str(table.name))
        name = getattr(part, "name", None)
        if isinstance(name, str):
            out.add(name)
        if isinstance(part, str):
            out.add(part)
    return out


def test_migrated_feature_tables_match_the_models(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
        tables = set(ctx.bind.dialect.get_table_names(conn))  # type: ignore[union-attr]
    assert tables >= MY_TABLES
    mine = [d for d in diffs if _tables_of(d) & MY_TABLES]
    assert mine == []
