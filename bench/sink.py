"""The sink: an HTTP server on loopback, in its own process, standing in for the app a zap's
action calls; it records each POST's ``id`` and arrival time and counts ids that arrive twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
from procs import HERE, free_port, wait_until

# --------------------------------------------------------------------------- HTTP/1.1 framing


async def _read_message(
    reader: asyncio.StreamReader, *, response: bool
) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP/1.1 message: start line, headers (lower-case names), body; None at a clean EOF.

    The body is framed by Content-Length or chunked transfer coding; a response with neither is
    read to EOF (the server closes), a request with neither has no body.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    start, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif response and not _bodiless(start):
        body = await reader.read()
        headers["connection"] = "close"
    else:
        body = b""
    return start, headers, body


def _bodiless(status_line: str) -> bool:
    code = int(status_line.split()[1])
    return code < 200 or code in (204, 304)


def _keeps_alive(headers: dict[str, str]) -> bool:
    return headers.get("connection", "").lower() != "close"


# --------------------------------------------------------------------------- the sink


class _Records:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.rows: list[tuple[str, float]] = []
        self.seen: dict[str, int] = {}
        self.duplicates = 0
        self.refused = 0

    def add(self, body: bytes, arrival: float) -> bool:
        try:
            event_id = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            self.refused += 1
            return False
        self.rows.append((event_id, arrival))
        self.seen[event_id] = self.seen.get(event_id, 0) + 1
        if self.seen[event_id] == 2:
            self.duplicates += 1
        return True

    def view(self, prefix: str, rows: bool) -> dict[str, Any]:
        picked = [row for row in self.rows if row[0].startswith(prefix)]
        out: dict[str, Any] = {
            "count": len({row[0] for row in picked}),
            "arrivals": len(picked),
            "duplicates": self.duplicates,
            "refused": self.refused,
        }
        if rows:
            out["records"] = picked
        return out


async def _sink(port: int) -> None:
    records = _Records()

    async def reply(writer: asyncio.StreamWriter, status: str, payload: object) -> None:
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while message := await _read_message(reader, response=False):
                arrival = time.time()
                start, headers, body = message
                method, target, _ = start.split(" ", 2)
                path, _, query = target.partition("?")
                prefix = parse_qs(query).get("prefix", [""])[0]
                if method == "POST" and path == "/reset":
                    records.clear()
                    await reply(writer, "200 OK", {})
                elif method == "POST":
                    ok = records.add(body, arrival)
                    await reply(writer, "200 OK" if ok else "400 Bad Request", {"ok": ok})
                elif path in ("/count", "/records"):
                    await reply(writer, "200 OK", records.view(prefix, path == "/records"))
                else:
                    await reply(writer, "404 Not Found", {})
                if not _keeps_alive(headers):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class Sink:
    """The sink's process: ``url`` takes the actions' POSTs (any path but /reset)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/sms"
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "harness.py"), "sink", "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
        )
        self.client = httpx.Client(base_url=self.base, timeout=30)
        wait_until(lambda: self._answers(), 20, "the sink did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _answers(self) -> bool:
        try:
            self.client.get("/count")
        except httpx.TransportError:
            return False
        return True

    def reset(self) -> None:
        self.client.post("/reset").raise_for_status()

    def count(self, prefix: str = "") -> int:
        """Distinct ids arrived (starting with ``prefix``)."""
        return int(self.client.get("/count", params={"prefix": prefix}).json()["count"])

    def records(self, prefix: str = "") -> list[tuple[str, float]]:
        """Every arrival (starting with ``prefix``), as (id, arrival time), in arrival order."""
        rows = self.client.get("/records", params={"prefix": prefix}).json()["records"]
        return [(event_id, arrival) for event_id, arrival in rows]

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
