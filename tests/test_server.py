"""zapflow's own Prefect server: one per folder, on the port the folder chooses, never another
folder's history by accident."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serve_process import free_port


def zapflow(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return subprocess.run(
        [sys.executable, "-c", "from flows.cli import main; main()", *args],
        env={**clean, "ZAPFLOW_HOME": str(home), **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )


def test_two_folders_do_not_mix_their_histories_on_one_server(tmp_path):
    port = str(free_port())
    first, second = tmp_path / "first", tmp_path / "second"
    started = zapflow(first, "server", "start", ZAPFLOW_PREFECT_PORT=port)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        # The UI on that port talks to the API on that port (Prefect's default says 4200).
        import httpx

        ui = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()
        assert ui["api_url"] == f"http://127.0.0.1:{port}/api"

        refused = zapflow(second, "server", "start", ZAPFLOW_PREFECT_PORT=port)
        assert refused.returncode == 1
        assert "keeps the run history of another zapflow folder" in refused.stdout + refused.stderr
        assert str(first.resolve()) in refused.stdout + refused.stderr
        assert "ZAPFLOW_PREFECT_PORT=<another port>" in refused.stdout + refused.stderr

        shared = zapflow(
            second, "server", "start", ZAPFLOW_PREFECT_PORT=port, ZAPFLOW_SHARE_PREFECT="1"
        )
        assert shared.returncode == 0, shared.stdout + shared.stderr
        again = zapflow(first, "server", "start", ZAPFLOW_PREFECT_PORT=port)
        assert again.returncode == 0  # its own folder uses it as before

        bad = zapflow(first, "server", "status", ZAPFLOW_PREFECT_PORT="http")
        assert bad.returncode == 1 and "is not a port number" in bad.stdout + bad.stderr
    finally:
        zapflow(first, "server", "stop", ZAPFLOW_PREFECT_PORT=port)


def test_serve_warns_when_prefect_is_not_the_tested_release(monkeypatch, prefect_api):
    """The tested server and client say nothing; another server version, or another client
    version, is named with what to do."""
    import http.server
    import json
    import threading

    import prefect

    from flows import server

    assert server.version_warnings(prefect_api) == []

    class OtherVersion(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps("3.10.0" if self.path == "/api/admin/version" else "?").encode()
            self.send_response(200 if self.path == "/api/admin/version" else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtherVersion)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}/api"
        (warning,) = server.version_warnings(url)
        assert f"server at {url} is version 3.10.0" in warning
        assert f"tested with {server.TESTED_PREFECT}" in warning
    finally:
        other.shutdown()

    monkeypatch.setattr(prefect, "__version__", "3.9.9")
    (warning,) = server.version_warnings(None)
    assert "Prefect 3.9.9 is installed" in warning and "-c requirements.lock" in warning
