"""worker heartbeats

Revision ID: 0010
Revises: 0006

One row per running worker (keyshift.db.models.workers): `keyshift worker status`, the metrics of
live and lost workers. Written by hand.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyshift.db.types

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None

_UTC = keyshift.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("last_heartbeat_at", _UTC, nullable=False),
        sa.Column("ttl_seconds", sa.Float(), nullable=False),
        sa.Column("current_job", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_heartbeats")),
    )
    with op.batch_alter_table("worker_heartbeats", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_heartbeats_last_heartbeat_at"), ["last_heartbeat_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("worker_heartbeats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_heartbeats_last_heartbeat_at"))
    op.drop_table("worker_heartbeats")
