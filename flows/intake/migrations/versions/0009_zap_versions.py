"""Zap versions: each run records the version of the zap it ran (a hash of the zap's content),
and each version's definition is kept once, so a run can be replayed with the zap it ran; and
each run counts its autoreplays.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("zapflow_runs", sa.Column("zap_version", sa.Text()))
    op.add_column(
        "zapflow_runs",
        sa.Column("autoreplays", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "zapflow_zap_versions",
        sa.Column("version", sa.Text(), primary_key=True),
        sa.Column("zap", sa.Text(), nullable=False),
        sa.Column(
            "definition", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("git_revision", sa.Text()),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("zapflow_zap_versions")
    op.drop_column("zapflow_runs", "autoreplays")
    op.drop_column("zapflow_runs", "zap_version")
