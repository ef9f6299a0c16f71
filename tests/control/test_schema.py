"""The migrated schema (revision 0001) matches the control-plane models, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from keyshift.db.models import Base
from keyshift.runtime import Runtime

CONTROL_TABLES = {
    "tenants",
    "environments",
    "vaults",
    "policies",
    "byok_keys",
    "deks",
    "dek_wraps",
    "admin_audit",
}


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:] if isinstance(item, tuple) else ():
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if isinstance(part, str) and part in CONTROL_TABLES:
            return part
        if name in CONTROL_TABLES:
            return str(name)
    return None


def test_migrated_control_tables_match_models(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
        present = set(rt.engine.dialect.get_table_names(conn))
    mine = [d for d in diffs if _table_of(d) in CONTROL_TABLES]
    assert mine == []
    assert present >= CONTROL_TABLES


def test_admin_audit_trail_is_append_only_in_the_database(rt: Runtime) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    from keyshift.control import audit_trail

    with rt.transaction() as s:
        audit_trail.record(rt, s, "test.event", target_type="test", target_id="x")
    before = audit_trail.query(rt)
    for stmt in ("UPDATE admin_audit SET outcome = 'error'", "DELETE FROM admin_audit"):
        with pytest.raises(DatabaseError) as info, rt.engine.begin() as conn:
            conn.execute(text(stmt))
        assert "append-only" in str(info.value)
    assert audit_trail.query(rt) == before
