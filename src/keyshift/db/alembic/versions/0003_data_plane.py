"""data plane

Revision ID: 0003
Revises: 0002

Placeholder in the migration chain; filled in by the part that owns these tables
(H-data: record rows, SQL-layout audit rows and file chunks.)
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
