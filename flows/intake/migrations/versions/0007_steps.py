"""Step checkpoints: each step's outcome of a zap run, committed before the next step starts, so
a resumed run never runs a completed step again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "zapflow_steps",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("zap", sa.Text(), primary_key=True),
        sa.Column("step", sa.Text(), primary_key=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "output", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('completed', 'skipped')", name="ck_zapflow_steps_status"),
    )


def downgrade() -> None:
    op.drop_table("zapflow_steps")
