from __future__ import annotations

from connectors._contract import App
from connectors.http.connection import HttpConnection

app = App(
    "http",
    title="HTTP / webhooks",
    description=(
        "Call any HTTP API (method, URL, headers, query, JSON, form or raw body; basic, bearer "
        "or API-key auth from a connection), send webhooks signed the Standard Webhooks way, "
        "and start zaps on new items of a JSON list an API answers with. "
        "A connection is optional: public URLs need none."
    ),
    connection=HttpConnection,
    connection_required=False,
)
