"""data plane

Revision ID: 0003
Revises: 0002

Encrypted record rows, and the SQL layout of audit events and files (legacy BYOK environments).
Written by hand for the data-plane tables only (keyshift.db.models.data).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyshift.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_records",
        sa.Column("environment_id", sa.String(length=40), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("record_id", sa.String(length=512), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("dek_id", sa.String(length=32), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("environment_id", "table_name", "record_id", name=op.f("pk_data_records")),
    )
    op.create_index("ix_data_records_env_dek", "data_records", ["environment_id", "dek_id"], unique=False)

    op.create_table(
        "data_audit",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("environment_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("dek_id", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_data_audit")),
        sa.UniqueConstraint("event_id", name=op.f("uq_data_audit_event_id")),
    )
    op.create_index("ix_data_audit_env_at", "data_audit", ["environment_id", "at", "seq"], unique=False)

    op.create_table(
        "data_files",
        sa.Column("environment_id", sa.String(length=40), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("dek_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("environment_id", "path", name=op.f("pk_data_files")),
        sa.UniqueConstraint("file_id", name=op.f("uq_data_files_file_id")),
    )

    op.create_table(
        "data_file_chunks",
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq", name=op.f("pk_data_file_chunks")),
    )


def downgrade() -> None:
    op.drop_table("data_file_chunks")
    op.drop_table("data_files")
    op.drop_index("ix_data_audit_env_at", table_name="data_audit")
    op.drop_table("data_audit")
    op.drop_index("ix_data_records_env_dek", table_name="data_records")
    op.drop_table("data_records")
