"""extra storages

Revision ID: 0006
Revises: 0005

Placeholder in the migration chain; filled in by the part that owns these tables
(H-features: search index, lake exports, backups.)
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
