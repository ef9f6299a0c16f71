"""api auth

Revision ID: 0005
Revises: 0004

Placeholder in the migration chain; filled in by the part that owns these tables
(H-api: API tokens (hashed).)
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
