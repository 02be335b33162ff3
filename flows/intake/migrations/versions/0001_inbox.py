"""The inbox: events, the (event, zap) run ledger, webhook tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "zapflow_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("connection", sa.Text(), nullable=True),
        sa.Column("zap", sa.Text(), nullable=True),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("id", name="uq_zapflow_events_id"),
        sa.CheckConstraint(
            "state IN ('pending', 'claimed', 'done')", name="ck_zapflow_events_state"
        ),
        sqlite_autoincrement=True,
    )
    # Claiming walks the events not done yet in seq order; purging finds old done ones.
    op.create_index(
        "ix_zapflow_events_waiting",
        "zapflow_events",
        ["seq"],
        sqlite_where=sa.text("state <> 'done'"),
        postgresql_where=sa.text("state <> 'done'"),
    )
    op.create_index("ix_zapflow_events_done", "zapflow_events", ["state", "done_at"])

    op.create_table(
        "zapflow_runs",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("zap", sa.Text(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("flow_run_id", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )

    op.create_table(
        "zapflow_hook_tokens",
        sa.Column("kind", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("token", name="uq_zapflow_hook_tokens_token"),
    )


def downgrade() -> None:
    op.drop_table("zapflow_hook_tokens")
    op.drop_table("zapflow_runs")
    op.drop_index("ix_zapflow_events_done", table_name="zapflow_events")
    op.drop_index("ix_zapflow_events_waiting", table_name="zapflow_events")
    op.drop_table("zapflow_events")
