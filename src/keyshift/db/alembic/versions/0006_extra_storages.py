"""extra storages

Revision ID: 0006
Revises: 0005

The blind search index (generations + postings), data lake exports and backups
(keyshift.db.models.features). Written by hand for these tables only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyshift.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_T = keyshift.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "search_indexes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("environment_id", sa.String(length=40), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("dek_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("kek_vault_id", sa.String(length=40), nullable=True),
        sa.Column("kek_key_name", sa.String(length=300), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("started_at", _T, nullable=False),
        sa.Column("ready_at", _T, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_indexes")),
        sa.UniqueConstraint(
            "environment_id", "table_name", "generation", name=op.f("uq_search_indexes_environment_id")
        ),
    )
    op.create_index(
        "ix_search_indexes_env_table_state",
        "search_indexes",
        ["environment_id", "table_name", "state"],
        unique=False,
    )
    op.create_table(
        "search_postings",
        sa.Column("index_id", sa.String(length=40), nullable=False),
        sa.Column("token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("record_id", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("index_id", "token", "record_id", name=op.f("pk_search_postings")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_search_postings_index_record", "search_postings", ["index_id", "record_id"], unique=False
    )
    op.create_table(
        "lake_exports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("environment_id", sa.String(length=40), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("dek_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lake_exports")),
        sa.UniqueConstraint("environment_id", "path", name=op.f("uq_lake_exports_environment_id")),
    )
    op.create_index(op.f("ix_lake_exports_environment_id"), "lake_exports", ["environment_id"], unique=False)
    op.create_table(
        "backups",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("environment_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("dek_id", sa.String(length=32), nullable=False),
        sa.Column("kek_vault_id", sa.String(length=40), nullable=True),
        sa.Column("kek_key_name", sa.String(length=300), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("expires_at", _T, nullable=False),
        sa.Column("purged_at", _T, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    op.create_index("ix_backups_env_created", "backups", ["environment_id", "created_at"], unique=False)
    op.create_index(op.f("ix_backups_expires_at"), "backups", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_backups_expires_at"), table_name="backups")
    op.drop_index("ix_backups_env_created", table_name="backups")
    op.drop_table("backups")
    op.drop_index(op.f("ix_lake_exports_environment_id"), table_name="lake_exports")
    op.drop_table("lake_exports")
    op.drop_index("ix_search_postings_index_record", table_name="search_postings")
    op.drop_table("search_postings")
    op.drop_index("ix_search_indexes_env_table_state", table_name="search_indexes")
    op.drop_table("search_indexes")
