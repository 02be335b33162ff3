"""Unrecognised deliveries: what an authenticated sender delivered that its app cannot read yet.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "zapflow_unrecognised",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("connection", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_ids", sa.JSON(), nullable=True),
        sa.UniqueConstraint("id", name="uq_zapflow_unrecognised_id"),
        sa.CheckConstraint(
            "state IN ('waiting', 'reprocessed')", name="ck_zapflow_unrecognised_state"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_zapflow_unrecognised_state", "zapflow_unrecognised", ["state", "seq"])


def downgrade() -> None:
    op.drop_index("ix_zapflow_unrecognised_state", table_name="zapflow_unrecognised")
    op.drop_table("zapflow_unrecognised")
