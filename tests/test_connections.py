"""Connections as an ops person manages them: stored encrypted, listed masked, renamed,
re-keyed, deleted — and never refused silently nor printed."""

from __future__ import annotations

import asyncio
import textwrap
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors import registry
from flows import connections
from flows.cli import app
from flows.connection_blocks import block_type_slug

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
TOKEN = "tok-SECRET-4f9a1c2e77"


def connect(name: str, token: str = TOKEN, *extra: str):
    return runner.invoke(
        app,
        [
            "connect",
            "cinnox",
            name,
            "--no-check",
            "--set",
            "app_id=app-123",
            "--set",
            f"app_token={token}",
            "--set",
            "base_url=http://127.0.0.1:9",
            *extra,
        ],
    )


def test_connect_stores_it_encrypted_and_lists_it_masked():
    result = connect("hk-office")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output

    listing = runner.invoke(app, ["connections"])
    assert listing.exit_code == 0, listing.output
    assert "hk-office" in listing.output
    assert "app_id=app-123" in listing.output and "app_token=********" in listing.output
    assert TOKEN not in listing.output

    shown = runner.invoke(app, ["connections", "show", "cinnox", "hk-office"])
    assert "app_token: ********" in shown.output and TOKEN not in shown.output

    loaded = asyncio.run(connections.load_block(registry.app("cinnox"), "hk-office"))
    assert loaded.app_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(loaded)


def test_connect_refuses_bad_values_and_existing_names():
    bad = runner.invoke(app, ["connect", "cinnox", "Bad Name", "--no-check"])
    assert bad.exit_code == 1 and "lowercase letters, digits and -" in bad.output
    missing = runner.invoke(
        app, ["connect", "cinnox", "partial", "--no-check", "--set", "app_id=x"]
    )
    assert missing.exit_code == 1
    assert "app_token is missing: give --set app_token=... (no terminal to ask)" in missing.output
    assert connect("twice").exit_code == 0
    again = connect("twice")
    assert again.exit_code == 1 and "exists; use --replace" in again.output


def test_rename_rekey_and_delete(tmp_path):
    assert connect("old-name").exit_code == 0
    renamed = runner.invoke(
        app, ["connections", "rename", "cinnox", "old-name", "new-name", "--zaps", str(tmp_path)]
    )
    assert renamed.exit_code == 0, renamed.output
    owner = registry.app("cinnox")
    assert asyncio.run(connections.load_block(owner, "old-name")) is None

    rekeyed = runner.invoke(
        app,
        [
            "connections",
            "rekey",
            "cinnox",
            "new-name",
            "--no-check",
            "--set",
            "app_token=tok-rotated",
        ],
    )
    assert rekeyed.exit_code == 0, rekeyed.output
    loaded = asyncio.run(connections.load_block(owner, "new-name"))
    assert loaded.app_token.get_secret_value() == "tok-rotated" and loaded.app_id == "app-123"

    (tmp_path / "uses.yaml").write_text(
        textwrap.dedent("""\
        zap: uses-it
        trigger: {app: cinnox, event: missed_enquiry, connection: new-name}
        steps:
          - id: detail
            action: cinnox.get_enquiry_detail
            input: {display_case_number: "{{ trigger.displayCaseNumber }}"}
        """)
    )
    refused = runner.invoke(
        app, ["connections", "delete", "cinnox", "new-name", "--zaps", str(tmp_path)]
    )
    assert refused.exit_code == 1
    assert "enabled zaps use cinnox/new-name" in refused.output and "uses-it" in refused.output
    forced = runner.invoke(
        app, ["connections", "delete", "cinnox", "new-name", "--force", "--zaps", str(tmp_path)]
    )
    assert forced.exit_code == 0, forced.output
    assert asyncio.run(connections.load_block(owner, "new-name")) is None


def test_environment_connections_win_and_are_listed_masked(monkeypatch):
    monkeypatch.setenv("ZAPFLOW_CINNOX_CI_APP_ID", "app-env")
    monkeypatch.setenv("ZAPFLOW_CINNOX_CI_APP_TOKEN", "tok-from-env-99")
    monkeypatch.setenv("ZAPFLOW_CINNOX_CI_BASE_URL", "http://127.0.0.1:9")
    owner = registry.app("cinnox")
    resolved = asyncio.run(connections.resolve(owner, "ci"))
    assert resolved.app_id == "app-env"
    listing = runner.invoke(app, ["connections"])
    row = next(line for line in listing.output.splitlines() if " ci " in f" {line} ")
    assert "environment" in row and "tok-from-env-99" not in listing.output


def test_a_missing_connection_says_how_to_create_it():
    with pytest.raises(connections.ConnectionProblem) as info:
        asyncio.run(connections.resolve(registry.app("cinnox"), "nowhere"))
    message = str(info.value)
    assert "zapflow connect cinnox nowhere" in message
    assert "ZAPFLOW_CINNOX_NOWHERE_<FIELD>" in message


def test_connect_asks_at_a_terminal_and_optional_fields_may_be_left_blank(monkeypatch):
    """`zapflow connect http api` at a terminal: Enter skips an optional field (its default
    applies); only the fields answered are stored."""
    monkeypatch.setattr("flows.cli.connections._at_terminal", lambda: True)
    fields = list(registry.app("http").connection.model_fields)
    answers = {"auth": "bearer", "token": "tok-terminal-9d1e"}
    typed = "".join(answers.get(f, "") + "\n" for f in fields)
    result = runner.invoke(app, ["connect", "http", "from-terminal", "--no-check"], input=typed)
    assert result.exit_code == 0, result.output
    assert "Enter to skip" in result.output
    loaded = asyncio.run(connections.load_block(registry.app("http"), "from-terminal"))
    assert loaded.auth == "bearer" and loaded.token.get_secret_value() == "tok-terminal-9d1e"
    assert loaded.base_url == registry.app("http").connection.model_fields["base_url"].default


def test_connections_on_a_fresh_server_lists_none(prefect_api):
    """A Prefect server that never stored a connection has no block type for them yet."""
    import httpx

    def answered(call: Any) -> httpx.Response:
        """The server's answer, asked again while it says "database locked" (503), as
        Prefect's own client does."""
        for _ in range(20):
            reply = call()
            if reply.status_code != 503:
                return reply
            time.sleep(0.5)
        return reply

    with httpx.Client(base_url=prefect_api, timeout=10) as api:
        for slug in [block_type_slug(a) for a in registry.apps()] + [connections.LEGACY_SLUG]:
            found = answered(lambda slug=slug: api.get(f"/block_types/slug/{slug}"))
            if found.status_code == 200:  # an earlier test stored one: make it fresh again
                path = f"/block_types/{found.json()['id']}"
                gone = answered(lambda path=path: api.delete(path))
                assert gone.status_code == 204, gone.text
    result = runner.invoke(app, ["connections"])
    assert result.exit_code == 0, result.output
    assert "no connections yet" in result.output
    assert connect("after-fresh").exit_code == 0  # and the first one registers the type
    assert "after-fresh" in runner.invoke(app, ["connections"]).output


def test_each_app_has_a_block_type_with_a_form_its_secrets_write_only(prefect_api):
    """What the Prefect UI's Blocks page builds its form from: one block type per app, a field
    per connection field with its description and default, secrets as password fields."""
    import httpx

    asyncio.run(connections.register_block_types(registry.apps()))
    with httpx.Client(base_url=prefect_api, timeout=10) as api:
        kind = api.get("/block_types/slug/zapflow-cinnox-connection")
        assert kind.status_code == 200, kind.text
        assert kind.json()["name"] == "zapflow CINNOX connection"
        schemas = api.post(
            "/block_schemas/filter",
            json={"block_schemas": {"block_type_id": {"any_": [kind.json()["id"]]}}},
        ).json()
        fields = schemas[0]["fields"]
        assert fields["secret_fields"] == ["app_token"]
        assert fields["properties"]["app_token"]["format"] == "password"
        assert fields["properties"]["rate_limit"]["default"] == "500/min"
        assert set(fields["required"]) == {"app_id", "app_token", "base_url"}
        for app_name in ("http", "google-sheets", "email", "sql", "slack", "teams"):
            found = api.get(f"/block_types/slug/zapflow-{app_name}-connection")
            assert found.status_code == 200, app_name


def test_a_connection_made_in_the_prefect_ui_is_used_by_zaps(prefect_api):
    """The UI saves a block document of the app's type from its form: zapflow reads it (its
    model still checks the values), lists it masked, and the API never shows its secret."""
    import httpx

    owner = registry.app("cinnox")
    asyncio.run(connections.register_block_types({"cinnox": owner}))
    with httpx.Client(base_url=prefect_api, timeout=10) as api:
        kind = api.get("/block_types/slug/zapflow-cinnox-connection").json()
        schema = api.post(
            "/block_schemas/filter",
            json={"block_schemas": {"block_type_id": {"any_": [kind["id"]]}}},
        ).json()[0]
        form = {"app_id": "ui-app", "app_token": TOKEN, "base_url": "http://127.0.0.1:9"}
        made = api.post(
            "/block_documents/",
            json={
                "name": "from-the-ui",
                "block_type_id": kind["id"],
                "block_schema_id": schema["id"],
                "data": {**form, "rate_limit": "120/min"},
            },
        )
        assert made.status_code == 201, made.text
        assert TOKEN not in api.get(f"/block_documents/{made.json()['id']}").text
    connections.forget("cinnox", "from-the-ui")
    used = asyncio.run(connections.resolve(owner, "from-the-ui"))
    assert used.app_id == "ui-app" and used.app_token.get_secret_value() == TOKEN
    assert (used.rate_limit.count, used.rate_limit.per) == (120, 60.0)
    listing = runner.invoke(app, ["connections", "--app", "cinnox"]).output
    assert "from-the-ui" in listing and "rate_limit=120/min" in listing and TOKEN not in listing


def test_a_connection_stored_in_the_old_generic_form_is_moved_and_keeps_working():
    """Connections saved before each app had its block type (one `zapflow-connection` block
    per connection, named <app>--<name>) are moved to their app's type, secrets and all."""
    owner = registry.app("cinnox")
    old = connections._legacy_block_class()(
        app="cinnox",
        name="old-office",
        settings={"app_id": "old-app", "base_url": "http://127.0.0.1:9"},
        secrets={"app_token": TOKEN},
    )
    asyncio.run(old.asave("cinnox--old-office", overwrite=True))
    listing = runner.invoke(app, ["connections"])
    assert listing.exit_code == 0, listing.output
    assert "cinnox/old-office" in listing.output  # said to have moved
    assert "old-office" in listing.output and TOKEN not in listing.output
    moved = asyncio.run(connections.load_block(owner, "old-office"))
    assert moved.app_id == "old-app" and moved.app_token.get_secret_value() == TOKEN
    assert asyncio.run(connections.migrate_legacy(registry.apps())) == []  # nothing left
    # One not listed yet is moved when a zap first uses it.
    asyncio.run(old.asave("cinnox--used-first", overwrite=True))
    connections.forget("cinnox", "used-first")
    used = asyncio.run(connections.resolve(owner, "used-first"))
    assert used.app_token.get_secret_value() == TOKEN
    assert asyncio.run(connections.migrate_legacy(registry.apps())) == []
