"""key rotation period

Revision ID: 0015
Revises: 0006

An optional automatic rotation period per policy (`policies.rotation_days`, days; NULL = off),
read by the lifecycle watch (keyshift.control.lifecycle.rotate_due).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        batch.add_column(sa.Column("rotation_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("rotation_days")
