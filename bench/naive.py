"""The naive design, as a benchmark peer: one Prefect flow run started inside each webhook request.

``POST /hook`` with a missed enquiry ``{id, displayCaseNumber, phone, sent}`` runs the async flow
``naive-missed-enquiry`` (one task that POSTs the SMS ``{recipient, text, sent, id}`` to the sink
with httpx) and answers only when that flow run has finished: 200, or 500 if it failed.

``start_naive(sink_url)`` starts what it needs, each in its own process: a throwaway Prefect
server (SQLite, UI off, the task-run recorder batched as zapflow's own server is; started by
``flows.server.start`` under a temporary ZAPFLOW_HOME) and this app under uvicorn.

    PREFECT_API_URL=... NAIVE_SINK_URL=http://127.0.0.1:9100/sms python bench/naive.py --port 8792
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI, Request
from harness import MakeBody, ThrowawayPrefect, free_port, missed_enquiry, wait_until
from prefect import flow, task

SINK_URL = os.environ.get("NAIVE_SINK_URL", "http://127.0.0.1:9100/sms")

app = FastAPI(title="naive design: a flow run per request")


@task(name="send-sms")
async def send_sms(message: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        (await client.post(SINK_URL, json=message)).raise_for_status()


@flow(name="naive-missed-enquiry")
async def missed_enquiry_flow(event: dict[str, Any]) -> None:
    await send_sms(
        {
            "recipient": event["phone"],
            "text": f"Sorry we missed you {event['displayCaseNumber']}",
            "sent": event["sent"],
            "id": event["id"],
        }
    )


@app.post("/hook")
async def hook(request: Request) -> dict[str, bool]:
    await missed_enquiry_flow(await request.json())
    return {"ok": True}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


def start_naive(sink_url: str) -> tuple[str, MakeBody, list[int], Callable[[], None]]:
    """Start a throwaway Prefect server and the naive app; (hook URL, body, pids, stop)."""
    prefect = ThrowawayPrefect("zapflow-bench-naive-")
    home = prefect.home
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(home / "client"),
        "NAIVE_SINK_URL": sink_url,
    }
    with open(home / "naive.log", "ab") as log:
        app_process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )

    def stop() -> None:
        prefect.stop(app_process)  # uvicorn waits for requests in flight: give up on them soon

    def answers() -> bool:
        if app_process.poll() is not None:
            raise RuntimeError("the naive app exited")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, 60, "the naive app did not answer")
    except Exception as exc:
        log = (home / "naive.log").read_text(errors="replace")[-2000:]
        stop()
        raise RuntimeError(f"{exc}; its log ended with:\n{log}") from exc
    except BaseException:
        stop()
        raise
    pids = [app_process.pid] + ([prefect.pid] if prefect.pid else [])
    return f"http://127.0.0.1:{port}/hook", missed_enquiry, pids, stop


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
