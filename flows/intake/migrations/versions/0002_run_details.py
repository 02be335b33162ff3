"""The run ledger says who runs each zap run and how it ended; recent runs first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("zapflow_runs") as batch:
        batch.add_column(sa.Column("failing_step", sa.Text(), nullable=True))
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("worker", sa.Text(), nullable=True))
    # `zapflow runs` lists the most recent runs first.
    op.create_index("ix_zapflow_runs_started", "zapflow_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_zapflow_runs_started", "zapflow_runs")
    with op.batch_alter_table("zapflow_runs") as batch:
        batch.drop_column("worker")
        batch.drop_column("message")
        batch.drop_column("failing_step")
