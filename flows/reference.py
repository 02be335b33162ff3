"""What installed apps offer, derived from their models: field tables, JSON Schema, docs.

One derivation serves ``zapflow apps``, ``zapflow schema`` (editors) and the generated
reference pages under ``docs/apps/``, so they cannot disagree with the validator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from connectors import registry
from connectors._contract import Action, App, Trigger
from flows.model import Zap

TEMPLATE_STRING = {"type": "string", "pattern": r"\{\{|\{%", "description": "a template"}


@dataclass
class FieldRow:
    name: str
    type: str
    required: bool
    description: str


@dataclass
class FieldTable:
    title: str
    rows: list[FieldRow]


def _type_of(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        if "enum" in target:
            return " | ".join(map(str, target["enum"]))
        return target.get("title", "object")
    if "const" in prop:
        return repr(prop["const"])
    if "enum" in prop:
        return " | ".join(map(str, prop["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in prop:
            parts = [_type_of(p, defs) for p in prop[key] if p.get("type") != "null"]
            return " | ".join(dict.fromkeys(parts)) or "null"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(prop.get('items', {}), defs)}"
    limits = [
        f"{k}={prop[k]}" for k in ("maxLength", "minLength", "minimum", "maximum") if k in prop
    ]
    if "pattern" in prop:
        limits.append(f"pattern {prop['pattern']}")
    if "format" in prop:
        kind = f"{kind} ({prop['format']})"
    return f"{kind} ({', '.join(limits)})" if limits else kind


def _rows(schema: dict[str, Any], defs: dict[str, Any]) -> list[FieldRow]:
    required = set(schema.get("required", []))
    return [
        FieldRow(name, _type_of(prop, defs), name in required, prop.get("description", ""))
        for name, prop in schema.get("properties", {}).items()
    ]


def field_tables(model: type[BaseModel], mode: str = "validation") -> list[FieldTable]:
    """The model's fields; one table per variant when the model is a tagged union."""
    schema = model.model_json_schema(by_alias=True, mode=mode)  # type: ignore[arg-type]
    defs = schema.get("$defs", {})
    variants = schema.get("oneOf") or schema.get("anyOf")
    if "properties" in schema or not variants:
        return [FieldTable("", _rows(schema, defs))]
    tables = []
    for variant in variants:
        body = defs.get(variant.get("$ref", "").rsplit("/", 1)[-1], variant)
        tag = next(
            (p.get("const") for p in body.get("properties", {}).values() if "const" in p), None
        )
        tables.append(FieldTable(str(tag or body.get("title", "")), _rows(body, defs)))
    return tables


def sample_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- JSON Schema

_LANGUAGE_DEFS = {"Zap", "ActionStep", "PathsStep", "Branch", "TriggerSpec", "StepPolicy"}


def _allow_templates(definition: dict[str, Any]) -> None:
    for name, prop in list(definition.get("properties", {}).items()):
        definition["properties"][name] = {
            "anyOf": [prop, TEMPLATE_STRING],
            **({"description": prop["description"]} if "description" in prop else {}),
        }


def _def_name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[-1]


def zap_json_schema() -> dict[str, Any]:
    """JSON Schema of a zap file, with each action's input schema keyed on ``action`` and each
    trigger's options schema keyed on ``app`` and ``event``."""
    actions: list[Action] = [a for app in registry.apps().values() for a in app.actions.values()]
    triggers: list[Trigger] = [t for app in registry.apps().values() for t in app.triggers.values()]
    options = [(t, t.options_model) for t in triggers if t.options_model is not None]
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(Zap, "validation")]
    models += [(a.input_model, "validation") for a in actions]
    models += [(model, "validation") for _, model in options]
    keys, combined = models_json_schema(
        models,
        ref_template="#/$defs/{model}",
    )
    defs: dict[str, Any] = combined["$defs"]
    # Trigger options are read as written (there is no event yet to render a template with).
    fixed = {_def_name(keys[(model, "validation")]) for _, model in options}
    for name, definition in defs.items():
        if name not in _LANGUAGE_DEFS | fixed:
            _allow_templates(definition)
    step = defs["ActionStep"]
    step["properties"]["action"] = {
        "type": "string",
        "description": "app.action_name",
        "oneOf": [
            {"const": a.key, "title": a.title, "description": a.description} for a in actions
        ],
    }
    step["allOf"] = [
        {
            "if": {"properties": {"action": {"const": a.key}}, "required": ["action"]},
            "then": {"properties": {"input": keys[(a.input_model, "validation")]}},
        }
        for a in actions
    ]
    trigger = defs["TriggerSpec"]["properties"]
    trigger["app"] = {**trigger["app"], "enum": sorted(registry.apps())}
    trigger["event"] = {**trigger["event"], "enum": sorted({t.name for t in triggers})}
    defs["TriggerSpec"]["allOf"] = [
        {
            "if": {
                "properties": {"app": {"const": t.app}, "event": {"const": t.name}},
                "required": ["app", "event"],
            },
            "then": {"properties": {"options": keys[(model, "validation")]}},
        }
        for t, model in options
    ]
    root = defs.pop("Zap")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://zapflow.dev/schema/zap.json",
        **root,
        "$defs": defs,
    }


def schema_text() -> str:
    return json.dumps(zap_json_schema(), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- markdown docs


def _table_md(table: FieldTable) -> list[str]:
    lines = [f"*transform: `{table.title}`*", ""] if table.title else []
    if not table.rows:
        return [*lines, "(no fields)", ""]
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for row in table.rows:
        kind = row.type.replace("|", "\\|")
        desc = row.description.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{row.name}` | {kind} | {'yes' if row.required else ''} | {desc} |")
    return [*lines, ""]


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def app_markdown(app: App) -> str:
    lines = [
        f"# {app.title} (`{app.name}`)",
        "",
        "<!-- generated by `zapflow docs`; edit the app's models, not this file -->",
        "",
        app.description,
        "",
    ]
    if app.connection is not None:
        lines += ["## Connection", ""]
        if not app.connection_required:
            lines += ["Optional: a step without `connection:` runs without one.", ""]
        for table in field_tables(app.connection):
            lines += _table_md(table)
    if app.triggers:
        lines += ["## Triggers", ""]
    for trig in app.triggers.values():
        lines += [f"### `{trig.name}` — {trig.title}", "", trig.description, ""]
        if trig.options_model is not None:
            every = f", every {_duration(trig.interval)} unless it says" if trig.interval else ""
            lines += [f"Options (the zap's `trigger.options`{every}):", ""]
            for table in field_tables(trig.options_model):
                lines += _table_md(table)
        lines += [f"Kind: {trig.kind}. Payload fields (what a zap reads as `trigger.<field>`):", ""]
        for table in field_tables(trig.payload_model, "serialization"):
            lines += _table_md(table)
        lines += ["Sample:", "", "```json", sample_json(trig.samples[0]), "```", ""]
    if app.actions:
        lines += ["## Actions", ""]
    for action in app.actions.values():
        lines += [f"### `{action.key}` — {action.title}", "", action.description, "", "Input:", ""]
        for table in field_tables(action.input_model):
            lines += _table_md(table)
        lines += ["Output (what later steps read as `steps.<id>.<field>`):", ""]
        for table in field_tables(action.output_model, "serialization"):
            lines += _table_md(table)
    return "\n".join(lines).rstrip() + "\n"


def generated_docs() -> dict[str, str]:
    """Every generated file under docs/, by relative path."""
    pages = {f"apps/{app.name}.md": app_markdown(app) for app in registry.apps().values()}
    pages["zap.schema.json"] = schema_text()
    return pages
