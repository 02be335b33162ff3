"""Triggers of the built-in app."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from connectors.builtin._app import app


class HookPayload(BaseModel):
    """Any JSON object; its keys are what the zap reads as ``trigger.<key>``."""

    model_config = ConfigDict(extra="allow")


app.trigger(
    "catch_hook",
    title="Catch hook",
    description="Starts the zap with whatever JSON object is posted to the zap's hook URL.",
    payload=HookPayload,
    samples=[
        {"id": "order-1001", "customer": "Chan Tai Man", "phone": "+85291234567", "total": 42.5}
    ],
)
