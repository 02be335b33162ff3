"""Several machines: each process sharing the inbox says its role in its heartbeat
(``zapflow_workers.role``: ``all``, ``receiver`` or ``worker``), and the pollers and schedules
are held under leases (``zapflow_leases``: ``name``, ``holder``, ``expires_at``), so each runs
on exactly one worker at a time and passes to another when that one dies.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("zapflow_workers") as batch:
        batch.add_column(sa.Column("role", sa.Text(), nullable=False, server_default="all"))
    op.create_table(
        "zapflow_leases",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_zapflow_leases_holder", "zapflow_leases", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_zapflow_leases_holder", table_name="zapflow_leases")
    op.drop_table("zapflow_leases")
    with op.batch_alter_table("zapflow_workers") as batch:
        batch.drop_column("role")
