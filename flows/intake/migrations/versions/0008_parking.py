"""Parked runs: a zap run waiting in a delay is stored, not held in memory.

``zapflow_events.state`` gains ``parked`` (every run of the event is finished or waiting; the
event is claimed again at ``available_at``, its earliest run's resume time), with its own index
so a claim never walks parked events; ``zapflow_runs`` gains ``resume_at`` (a ``waiting`` run's
resume time) and ``zapflow_steps.status`` gains ``waiting`` (the delay step a run waits in).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

# Written with <> (not IN): an IN list would let SQLite pick the (state, done_at) index and sort.
_CLAIMABLE = sa.text("state <> 'done' AND state <> 'parked'")


def _check(table: str, name: str, old: str, new: str) -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite cannot alter a constraint: the table is copied (batch mode), keeping the
        # events' AUTOINCREMENT (seqs are never reused); indexes are made again below.
        kwargs = {"sqlite_autoincrement": True} if table == "zapflow_events" else {}
        bind = op.get_bind()
        used = bind.execute(
            sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}
        ).scalar()
        with op.batch_alter_table(table, recreate="always", table_kwargs=kwargs) as batch:
            batch.drop_constraint(name, type_="check")
            batch.create_check_constraint(name, sa.text(new))
        if used is not None:  # the copy starts counting from its highest row, not the old count
            bind.execute(
                sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :used) WHERE name = :t"),
                {"used": used, "t": table},
            )
    else:
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, sa.text(new))


def upgrade() -> None:
    op.drop_index("ix_zapflow_events_waiting", table_name="zapflow_events")
    op.drop_index("ix_zapflow_events_done", table_name="zapflow_events")
    _check(
        "zapflow_events",
        "ck_zapflow_events_state",
        "state IN ('pending', 'claimed', 'done')",
        "state IN ('pending', 'claimed', 'parked', 'done')",
    )
    # Claiming walks only the events that may be claimed, in seq order; the parking timer finds
    # the parked ones that are due.
    op.create_index(
        "ix_zapflow_events_waiting",
        "zapflow_events",
        ["seq"],
        sqlite_where=_CLAIMABLE,
        postgresql_where=_CLAIMABLE,
    )
    op.create_index("ix_zapflow_events_done", "zapflow_events", ["state", "done_at"])
    op.create_index(
        "ix_zapflow_events_parked",
        "zapflow_events",
        ["available_at"],
        sqlite_where=sa.text("state = 'parked'"),
        postgresql_where=sa.text("state = 'parked'"),
    )
    op.add_column("zapflow_runs", sa.Column("resume_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_zapflow_runs_waiting",
        "zapflow_runs",
        ["resume_at"],
        sqlite_where=sa.text("state = 'waiting'"),
        postgresql_where=sa.text("state = 'waiting'"),
    )
    _check(
        "zapflow_steps",
        "ck_zapflow_steps_status",
        "status IN ('completed', 'skipped')",
        "status IN ('completed', 'skipped', 'waiting')",
    )


def downgrade() -> None:
    op.drop_index("ix_zapflow_runs_waiting", table_name="zapflow_runs")
    op.drop_column("zapflow_runs", "resume_at")
    op.drop_index("ix_zapflow_events_parked", table_name="zapflow_events")
    op.drop_index("ix_zapflow_events_waiting", table_name="zapflow_events")
    op.drop_index("ix_zapflow_events_done", table_name="zapflow_events")
    op.execute("UPDATE zapflow_events SET state = 'pending' WHERE state = 'parked'")
    _check(
        "zapflow_events",
        "ck_zapflow_events_state",
        "state IN ('pending', 'claimed', 'parked', 'done')",
        "state IN ('pending', 'claimed', 'done')",
    )
    op.create_index(
        "ix_zapflow_events_waiting",
        "zapflow_events",
        ["seq"],
        sqlite_where=sa.text("state <> 'done'"),
        postgresql_where=sa.text("state <> 'done'"),
    )
    op.create_index("ix_zapflow_events_done", "zapflow_events", ["state", "done_at"])
    op.execute("DELETE FROM zapflow_steps WHERE status = 'waiting'")
    _check(
        "zapflow_steps",
        "ck_zapflow_steps_status",
        "status IN ('completed', 'skipped', 'waiting')",
        "status IN ('completed', 'skipped')",
    )
