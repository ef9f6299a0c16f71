"""local vault

Revision ID: 0002
Revises: 0001

Placeholder in the migration chain; filled in by the part that owns these tables
(H-vault: tables of the embedded local vault (keys, versions, grants).)
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
