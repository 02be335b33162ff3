"""Limits held across every serve sharing the inbox: a zap's ``concurrency`` and
``rate_limit`` count its runs in ``zapflow_runs`` by zap and state (a new index; a run waiting
for a free slot is ``queued``), and an app account's API rate limit counts its calls in
``zapflow_rate_use`` (``key``, ``at``: one row per call, kept for the limit's period).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_zapflow_runs_zap_state", "zapflow_runs", ["zap", "state", "started_at"])
    op.create_index(
        "ix_zapflow_runs_queued",
        "zapflow_runs",
        ["zap", "started_at"],
        sqlite_where=sa.text("state = 'queued'"),
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_table(
        "zapflow_rate_use",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_zapflow_rate_use_key_at", "zapflow_rate_use", ["key", "at"])


def downgrade() -> None:
    op.drop_index("ix_zapflow_rate_use_key_at", table_name="zapflow_rate_use")
    op.drop_table("zapflow_rate_use")
    op.drop_index("ix_zapflow_runs_queued", table_name="zapflow_runs")
    op.drop_index("ix_zapflow_runs_zap_state", table_name="zapflow_runs")
