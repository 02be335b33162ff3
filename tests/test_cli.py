"""The command line a zap author uses before anything runs for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import flaky
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()

ZAP = textwrap.dedent(
    """\
    zap: greet
    trigger:
      app: builtin
      event: catch_hook
      samples:
        - {customer: "chan tai man", total: 42}
    steps:
      - id: name
        action: builtin.format_text
        input: {transform: titlecase, value: "{{ trigger.customer }}"}
      - id: wait
        action: builtin.delay
        input: {for: 1h}
      - id: remote
        action: flaky.call
        input: {value: "Hello {{ steps.name.output }}"}
      - id: never
        action: builtin.lookup
        when: "trigger.total > 100"
        input: {key: a, table: {a: 1}}
    """
)


def test_test_prints_each_steps_rendered_input_and_output(write_zap):
    path = write_zap(ZAP)
    result = runner.invoke(app, ["test", str(path)])
    assert result.exit_code == 0, result.output
    assert '"value": "chan tai man"' in result.output  # rendered input of `name`
    assert '"output": "Chan Tai Man"' in result.output
    assert '"value": "Hello Chan Tai Man"' in result.output  # the flaky app was really called
    assert '"waited_seconds": 3600.0' in result.output  # reported, not waited
    assert "skipped: `when: trigger.total > 100` was false" in result.output
    assert result.output.rstrip().endswith("completed")


def test_test_with_an_event_file(write_zap, tmp_path):
    path = write_zap(ZAP)
    event = tmp_path / "event.yaml"
    event.write_text("customer: lee siu lung\ntotal: 500\n")
    result = runner.invoke(app, ["test", str(path), "--event", str(event)])
    assert result.exit_code == 0, result.output
    assert '"output": "Lee Siu Lung"' in result.output
    assert "never builtin.lookup" in result.output and "skipped" not in result.output


def test_a_failing_step_exits_non_zero_and_names_the_step(write_zap):
    path = write_zap(ZAP.replace("input: {value:", "input: {permanent: true, value:"))
    result = runner.invoke(app, ["test", str(path)])
    assert result.exit_code == 1
    assert "failed: step 'remote' (flaky.call) failed: PermanentError" in result.output


def test_dry_run_calls_no_app_and_needs_no_server(write_zap):
    """`--dry-run` in a fresh process: Prefect is never imported, no server is contacted."""
    # flaky.call exists in the test session only; the fresh process sees installed apps.
    path = write_zap(
        ZAP.replace(
            "action: flaky.call\n    input: {value: ",
            "action: builtin.lookup\n    input: {key: a, table: {a: ",
        ).replace('output }}"}', 'output }}"}}', 1)
    )
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from flows.cli import app\n"
        f"r = CliRunner().invoke(app, ['test', {str(path)!r}, '--dry-run'])\n"
        "print(r.output)\n"
        "print('PREFECT IMPORTED' if 'prefect' in sys.modules else 'no prefect')\n"
        "sys.exit(r.exit_code)\n"
    )
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no prefect" in done.stdout
    assert '"output": "Chan Tai Man"' in done.stdout  # pure tools still run in a dry run


def test_dry_run_samples_apps_with_side_effects(write_zap):
    from conftest import ATTEMPTS

    before = sum(ATTEMPTS.values())
    result = runner.invoke(app, ["test", str(write_zap(ZAP)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "remote flaky.call" in result.output
    assert "dry run: sample output, app not called" in result.output
    assert sum(ATTEMPTS.values()) == before


DRY = textwrap.dedent(
    """\
    zap: dry
    trigger:
      app: builtin
      event: catch_hook
      samples: [{name: "Chan Tai Man", mobile: "+85291234567"}]
    steps:
      - id: contact
        action: cinnox.get_external_contact_detail
        connection: nowhere
        input: {full_name: "{{ trigger.name }}"}
      - id: sent
        action: cinnox.send_sms
        connection: nowhere
        input:
          number_type: Virtual Number
          sender_number: "+85235009000"
          recipient_number: "{{ trigger.mobile }}"
          text: hello
      - id: known
        action: builtin.format_text
        when: "steps.contact.found"
        input: {transform: titlecase, value: "{{ steps.contact.firstName }}"}
      - id: split
        action: builtin.format_text
        when: "steps.sent.segments > 1"
        input: {transform: uppercase, value: "{{ steps.sent.transaction_id }}"}
      - id: always
        action: builtin.format_text
        input: {transform: uppercase, value: "{{ steps.sent.transaction_id }}"}
    """
)


def test_dry_run_placeholders_have_their_fields_types(write_zap):
    """A bool placeholder is false and a count 0: a `when:` reads them as an empty answer would,
    not as the truthy text "<found>" (nor fails comparing text with a number)."""
    result = runner.invoke(app, ["test", str(write_zap(DRY)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"found": false' in result.output and '"segments": 0' in result.output
    assert "skipped: `when: steps.contact.found` was false" in result.output
    assert "skipped: `when: steps.sent.segments > 1` was false" in result.output
    assert '"output": "<TRANSACTION_ID>"' in result.output


def test_validate_reports_every_problem_and_exits_non_zero(tmp_path):
    (tmp_path / "ok.yaml").write_text(ZAP)
    (tmp_path / "bad.yaml").write_text(
        ZAP.replace("zap: greet", "zap: other")
        .replace("builtin.format_text", "builtin.format_txt")
        .replace("for: 1h", "for: soon")
    )
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 2
    assert ":9:13: steps[0].action: app 'builtin' has no action 'format_txt'" in lines[0]
    assert ":13:18: steps[1].input.for: 'soon' is not a duration" in lines[1]
    good = runner.invoke(app, ["validate", str(tmp_path / "ok.yaml")])
    assert good.exit_code == 0 and "1 zap(s) valid" in good.output


def test_apps_lists_and_shows_fields():
    listing = runner.invoke(app, ["apps"])
    assert (
        listing.exit_code == 0 and "builtin" in listing.output and "format_date" in listing.output
    )
    shown = runner.invoke(app, ["apps", "builtin"])
    assert shown.exit_code == 0
    assert "action builtin.lookup" in shown.output and "fallback" in shown.output
    unknown = runner.invoke(app, ["apps", "buildin"])
    assert unknown.exit_code == 1 and "did you mean 'builtin'" in unknown.output


def test_schema_checks_step_inputs_per_action(tmp_path):
    result = runner.invoke(app, ["schema", "--output", str(tmp_path / "zap.json")])
    assert result.exit_code == 0, result.output
    schema = json.loads((tmp_path / "zap.json").read_text())
    assert set(schema["required"]) == {"zap", "trigger", "steps"}
    step = schema["$defs"]["ActionStep"]
    keyed = {rule["if"]["properties"]["action"]["const"]: rule["then"] for rule in step["allOf"]}
    assert "builtin.lookup" in keyed and "flaky.call" in keyed
    lookup = schema["$defs"][keyed["builtin.lookup"]["properties"]["input"]["$ref"].split("/")[-1]]
    assert set(lookup["required"]) == {"key", "table"}


def test_generated_docs_and_schema_are_current():
    """docs/apps/*.md and docs/zap.schema.json come from the models; `zapflow docs` writes them."""
    from connectors import registry
    from flows.reference import generated_docs

    registry.unregister("flaky")  # the test session's own app is not part of the docs
    try:
        expected = generated_docs()
    finally:
        registry.register(flaky)
    docs = Path(__file__).parent.parent / "docs"
    for name, text in expected.items():
        assert (docs / name).read_text(encoding="utf-8") == text, f"docs/{name} is stale"


def test_the_deployment_entrypoint_is_the_zap_flow():
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    root = Path(__file__).parent.parent
    config = yaml.safe_load((root / "prefect.yaml").read_text())
    (deployment,) = config["deployments"]
    entry = deployment["entrypoint"]
    flow = load_flow_from_entrypoint(str(root / entry.split(":")[0]) + ":" + entry.split(":")[1])
    assert flow.name == "zap" and set(flow.parameters.required) == {"zap"}
    assert {"event", "events"} <= set(flow.parameters.properties)


def test_serve_refuses_a_retention_that_is_not_a_duration(tmp_path):
    result = runner.invoke(app, ["serve", str(tmp_path), "--retention", "soon"])
    assert result.exit_code == 1
    assert "--retention" in result.output and "'soon' is not a duration" in result.output


@pytest.mark.parametrize("given", ["big", "0", "1.5MiB", "-3KB"])
def test_serve_refuses_a_body_limit_that_is_not_a_size(tmp_path, given):
    result = runner.invoke(app, ["serve", str(tmp_path), "--max-body", given])
    assert result.exit_code == 1
    assert "--max-body" in result.output and f"{given!r} is not a size" in result.output
    assert "KiB" in result.output  # what is allowed


def test_sizes_in_the_units_people_write():
    from flows.model import parse_size

    assert parse_size("1MiB") == 1024 * 1024
    assert parse_size("512 KiB") == 512 * 1024
    assert parse_size("2MB") == 2_000_000
    assert parse_size("65536") == 65536


def test_validate_warns_about_a_signing_secret_that_is_not_set(tmp_path, monkeypatch):
    monkeypatch.delenv("ZAPFLOW_TEST_NEVER_SET", raising=False)
    (tmp_path / "signed.yaml").write_text(
        ZAP.replace(
            "event: catch_hook",
            "event: catch_hook\n  options: {secret_env: ZAPFLOW_TEST_NEVER_SET}",
        )
    )
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "$ZAPFLOW_TEST_NEVER_SET" in result.output
    assert "`zapflow serve` will not serve it" in result.output
    monkeypatch.setenv("ZAPFLOW_TEST_NEVER_SET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    quiet = runner.invoke(app, ["validate", str(tmp_path)])
    assert quiet.exit_code == 0 and "warning" not in quiet.output
