"""sweeps: when each deployment-wide sweep (retention, orphaned jobs) last ran, so that one worker
of many runs each per period

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("sweeps",
                    sa.Column("name", sa.String(40), primary_key=True),
                    sa.Column("last_run_at", sa.DateTime(), nullable=False))


def downgrade() -> None:
    op.drop_table("sweeps")
