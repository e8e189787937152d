"""registered presenters, the weights that made a job's result, a job's W3C trace context, the client's Idempotency-Key (one job per key and tenant), and
counters of finished jobs (kept when jobs are deleted or expire; started from the jobs there are)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(55), nullable=True))
        batch.add_column(sa.Column("weights", sa.String(80), nullable=True))
        batch.add_column(sa.Column("presenter_id", sa.String(32), nullable=True))
        batch.create_index("ix_jobs_presenter_id", ["presenter_id"])
    op.create_table(
        "presenters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("face_key", sa.String(300), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_presenters_tenant", "presenters", ["tenant"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.create_unique_constraint("uq_jobs_tenant_idempotency_key", ["tenant", "idempotency_key"])
    op.create_table(
        "finished_counts",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("jobs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("run_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("queue_s", sa.Float(), nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO finished_counts (tenant, status, jobs, run_s, queue_s) "
               "SELECT tenant, status, COUNT(*), COALESCE(SUM(run_s), 0), COALESCE(SUM(queue_s), 0) FROM jobs "
               "WHERE status IN ('succeeded', 'failed', 'cancelled') GROUP BY tenant, status")


def downgrade() -> None:
    op.drop_table("finished_counts")
    op.drop_table("presenters")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_tenant_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
        batch.drop_column("traceparent")
        batch.drop_column("weights")
        batch.drop_index("ix_jobs_presenter_id")
        batch.drop_column("presenter_id")
