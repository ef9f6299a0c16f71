"""Alembic environment: runs against the connection handed in by keyshift.db.schema."""

from __future__ import annotations

from alembic import context

import keyshift.db.models  # noqa: F401  (registers every table)
from keyshift.db.base import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when alembic CLI is used directly
    raise RuntimeError("run migrations through keyshift.db.schema.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
