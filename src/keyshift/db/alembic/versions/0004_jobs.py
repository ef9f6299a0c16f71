"""jobs

Revision ID: 0004
Revises: 0003

Persisted jobs and their batches with leases (keyshift.db.models.jobs). Written by hand.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyshift.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_UTC = keyshift.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=True),
        sa.Column("environment_id", sa.String(length=40), nullable=True),
        sa.Column("policy_id", sa.String(length=40), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("phase_planned", sa.Boolean(), nullable=False),
        sa.Column("items_done", sa.BigInteger(), nullable=False),
        sa.Column("items_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires", _UTC, nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("started_at", _UTC, nullable=True),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("updated_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_state_created", ["state", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_environment_id"), ["environment_id"], unique=False)

    op.create_table(
        "job_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires", _UTC, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("items", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_batches_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_batches")),
        sa.UniqueConstraint("job_id", "phase", "seq", name=op.f("uq_job_batches_job_id")),
    )
    with op.batch_alter_table("job_batches", schema=None) as batch_op:
        batch_op.create_index("ix_job_batches_job_phase_state", ["job_id", "phase", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_job_batches_job_phase_state")
    op.drop_table("job_batches")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_environment_id"))
        batch_op.drop_index("ix_jobs_state_created")
    op.drop_table("jobs")
