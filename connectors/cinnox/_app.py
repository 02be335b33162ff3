from __future__ import annotations

from connectors._contract import App
from connectors.cinnox.connection import CinnoxConnection

app = App(
    "cinnox",
    title="CINNOX",
    description=(
        "CINNOX cloud contact centre: enquiries, external contacts, SMS and IMs. The triggers "
        "and actions of CINNOX's Zapier app, with the same keys, value lists and limits."
    ),
    connection=CinnoxConnection,
)
