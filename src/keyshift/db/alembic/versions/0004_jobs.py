"""jobs

Revision ID: 0004
Revises: 0003

Placeholder in the migration chain; filled in by the part that owns these tables
(H-jobs: persisted jobs, batch leases, checkpoints.)
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
