"""local vault: keys, key versions, grants of the embedded local vault

Revision ID: 0002
Revises: 0001

Written by hand for the local-vault tables only (keyshift.db.models.vault).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyshift.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("vault_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_type", sa.String(length=10), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("current_version", sa.String(length=100), nullable=False),
        sa.Column("deleted_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("purge_after", keyshift.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["vault_id"], ["vaults.id"], name=op.f("fk_local_keys_vault_id_vaults")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_keys")),
        sa.UniqueConstraint("vault_id", "name", name=op.f("uq_local_keys_vault_id")),
    )
    op.create_table(
        "local_key_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("not_before", keyshift.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires", keyshift.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("material", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["local_keys.id"], name=op.f("fk_local_key_versions_key_id_local_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_key_versions")),
        sa.UniqueConstraint("key_id", "version", name=op.f("uq_local_key_versions_key_id")),
    )
    op.create_table(
        "local_key_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("identity", sa.String(length=200), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("created_at", keyshift.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["local_keys.id"], name=op.f("fk_local_key_grants_key_id_local_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_key_grants")),
        sa.UniqueConstraint("key_id", "identity", name=op.f("uq_local_key_grants_key_id")),
    )


def downgrade() -> None:
    op.drop_table("local_key_grants")
    op.drop_table("local_key_versions")
    op.drop_table("local_keys")
