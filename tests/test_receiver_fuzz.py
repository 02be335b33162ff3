"""The receiver under schemathesis: cases generated from its own OpenAPI description (valid and
invalid bodies, on real hook URLs and made-up ones, a catch hook's and CINNOX's) are sent to
`zapflow serve`; none may get a 5xx, and every answer must be one the description documents
(status code, content type, body schema)."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
from serve_process import Serve

pytest_plugins = ["cinnox_sandbox_fixtures"]
pytestmark = pytest.mark.usefixtures("prefect_api")

CASES_PER_HOOK = 800
"""Cases generated per hook URL (half valid, half not); the GETs take a few each."""
ZAPS = {
    "fuzzed.yaml": """\
zap: fuzzed
trigger: {app: builtin, event: catch_hook}
steps:
  - {id: echo, action: builtin.format_text, input: {transform: uppercase, value: "x"}}
""",
    "cinnox.yaml": """\
zap: cinnox-fuzzed
trigger: {app: cinnox, event: missed_enquiry, connection: sandbox}
steps:
  - {id: echo, action: builtin.format_text, input: {transform: uppercase, value: "x"}}
""",
}


def test_the_receiver_answers_every_generated_case_as_its_openapi_says(
    tmp_path, prefect_api, cinnox_sandbox, figures
):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    folder = tmp_path / "zaps"
    folder.mkdir()
    for name, text in ZAPS.items():
        (folder / name).write_text(text)
    env = {
        "PREFECT_API_URL": prefect_api,
        "ZAPFLOW_CINNOX_SANDBOX_APP_ID": cinnox_sandbox.app_id,
        "ZAPFLOW_CINNOX_SANDBOX_APP_TOKEN": cinnox_sandbox.token,
        "ZAPFLOW_CINNOX_SANDBOX_BASE_URL": cinnox_sandbox.base_url,
    }
    serve = Serve(folder, tmp_path / "home", env)
    base = f"http://127.0.0.1:{serve.port}"
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    try:
        catch = serve.wait_for(r"catch hook of fuzzed: (\S+)").group(1)
        cinnox = serve.wait_for(r"cinnox connection sandbox: (\S+)/<channel>").group(1)
        catch_zap, catch_token = catch.rsplit("/", 2)[-2:]
        _, app_name, connection, app_token = cinnox.rsplit("/", 3)
        real = {
            "zap_id": catch_zap,
            "token": catch_token,
            "app_name": app_name,
            "connection": connection,
        }
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {
            "/hooks/zap/{zap_id}/{token}",
            "/hooks/{app_name}/{connection}/{token}/{channel}",
            "/readyz",
            "/readyz/accepting",
            "/readyz/running",
        }

        def fuzz(operation, mode: GenerationMode):  # type: ignore[no-untyped-def]
            @settings(
                max_examples=CASES_PER_HOOK // 2 if operation.method == "post" else 10,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=operation.as_strategy(generation_mode=mode),
                on_real_hook=st.sampled_from([True, True, True, False]),  # mostly real hooks
                channel=st.sampled_from(["inquiry", "contact", "label", "sms"]),
            )
            def send(case, on_real_hook: bool, channel: str) -> None:  # type: ignore[no-untyped-def]
                if on_real_hook and case.path_parameters:
                    params = dict(case.path_parameters)
                    for key in params.keys() & real.keys():
                        params[key] = real[key]
                    if "channel" in params:
                        params["token"], params["channel"] = app_token, channel
                    case.path_parameters = params
                response = case.call(base_url=base, timeout=30)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    where = f"{case.method} {case.formatted_path}"
                    server_errors.append(f"{where}: {response.text}")
                if mode is GenerationMode.POSITIVE or response.status_code >= 500:
                    case.validate_response(response, checks=checks)

            return send

        # What CINNOX itself sends first: its URL verification challenge.
        deliveries = schema["/hooks/{app_name}/{connection}/{token}/{channel}"]["POST"]
        challenge = deliveries.Case(
            path_parameters={**real, "token": app_token, "channel": "inquiry"},
            body={"challenge": "c-7f3a"},
            media_type="application/json",
        )
        answer = challenge.call(base_url=base, timeout=30)
        assert answer.json() == {"code": 0, "result": {"challenge": "c-7f3a"}}
        challenge.validate_response(answer, checks=checks)

        for operation in operations:
            fuzz(operation, GenerationMode.POSITIVE)()
            # A GET without parameters has nothing to make invalid.
            with contextlib.suppress(Unsatisfiable):
                fuzz(operation, GenerationMode.NEGATIVE)()
    finally:
        code = serve.stop()
    cases = sum(statuses.values())
    figures.record("receiver fuzzing (schemathesis)", "cases sent", cases)
    figures.record("receiver fuzzing (schemathesis)", "5xx answers", len(server_errors))
    figures.record(
        "receiver fuzzing (schemathesis)",
        "answers by status",
        ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())),
    )
    assert server_errors == []
    assert cases >= 300 and statuses[200] > 0 and statuses[404] > 0
    assert code == 0, serve.output()
