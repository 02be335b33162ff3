"""Lookup table: map a value to another through a table written in the zap."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors._contract import ActionContext
from connectors.builtin._app import app


class LookupInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Any = Field(description="The value to look up")
    table: dict[str, Any] = Field(min_length=1, description="Rows of the table: key → result")
    fallback: Any = Field(None, description="Result when the key is not in the table")
    case_sensitive: bool = Field(True, description="Whether 'Sales' and 'sales' differ")


class LookupOutput(BaseModel):
    value: Any = Field(description="The table's result for the key, or the fallback")
    found: bool = Field(description="Whether the key was in the table")


@app.action("lookup", title="Lookup table", side_effects=False)
async def lookup(input: LookupInput, ctx: ActionContext) -> LookupOutput:
    """Returns the table's value for the key, or the fallback when the key is not there."""
    key = "" if input.key is None else str(input.key)
    if input.case_sensitive:
        if key in input.table:
            return LookupOutput(value=input.table[key], found=True)
    else:
        folded = {str(k).casefold(): v for k, v in input.table.items()}
        if key.casefold() in folded:
            return LookupOutput(value=folded[key.casefold()], found=True)
    return LookupOutput(value=input.fallback, found=False)
