"""Polling triggers and schedules: each one's cursor and health, and the items it has seen.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "zapflow_poll_state",
        sa.Column("poller", sa.Text(), primary_key=True),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column(
            "cursor", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
    )
    op.create_table(
        "zapflow_poll_seen",
        sa.Column("poller", sa.Text(), primary_key=True),
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Forgetting keys not seen for a while looks them up by poller and age.
    op.create_index("ix_zapflow_poll_seen_age", "zapflow_poll_seen", ["poller", "seen_at"])


def downgrade() -> None:
    op.drop_index("ix_zapflow_poll_seen_age", table_name="zapflow_poll_seen")
    op.drop_table("zapflow_poll_seen")
    op.drop_table("zapflow_poll_state")
