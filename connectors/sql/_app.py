from __future__ import annotations

from connectors._contract import App
from connectors.sql.connection import SqlConnection

app = App(
    "sql",
    title="SQL database",
    description=(
        "Insert and upsert rows, run a query with bound parameters, and start zaps on new rows "
        "of a table, in SQLite and PostgreSQL (or any database SQLAlchemy reaches with an "
        "asyncio driver). Table and column names are checked against the database itself; "
        "values are always sent as bound parameters, never written into the SQL."
    ),
    connection=SqlConnection,
)
