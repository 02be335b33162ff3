"""Honest state while Prefect's server is away: `zapflow serve` keeps accepting (deliveries wait
in the inbox), `/readyz` says which part fails and why, and when the server is back the waiting
events run at once, not one backoff at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
from serve_process import Serve, free_port
from test_isolation import PLAIN, Sink

pytestmark = pytest.mark.usefixtures("prefect_api")


class Cable:
    """A TCP proxy in front of Prefect's server that can be unplugged (connections refused,
    open ones cut) and plugged back in, on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_port()
        self.url = target.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{self.port}")
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._call(self._listen())

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(
            self._pipe, "127.0.0.1", self.port, reuse_address=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.open |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.close()
                self.open.discard(dst)

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def _unplug(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.open):
            writer.transport.abort()
        self.open.clear()
        await self.server.wait_closed()

    def unplug(self) -> None:
        self._call(self._unplug())

    def plug(self) -> None:
        self._call(self._listen())


def readiness(base: str) -> dict[str, httpx.Response]:
    # /running first: a test waiting for it to change then reads the whole /readyz after the
    # change (asked first, /readyz could still show the moment before).
    with httpx.Client(timeout=5) as client:
        return {part: client.get(f"{base}/readyz{part}") for part in ("/running", "/accepting", "")}


def test_readiness_tells_accepting_from_running_and_the_backlog_drains_at_once(
    tmp_path, prefect_api, figures
):
    sink = Sink()
    cable = Cable(prefect_api)
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "plain.yaml").write_text(PLAIN.format(sink=sink.url))
    serve = Serve(
        folder,
        tmp_path / "home",
        {"PREFECT_API_URL": cable.url, "PREFECT_CLIENT_MAX_RETRIES": "1"},
    )
    base = f"http://127.0.0.1:{serve.port}"
    try:
        hook = serve.wait_for(r"catch hook of plain: (\S+)").group(1)
        deadline = time.monotonic() + 20
        while (ready := readiness(base))[""].status_code != 200:
            assert time.monotonic() < deadline, ready[""].text
            time.sleep(0.2)
        assert ready[""].json()["accepting"]["ok"] and ready[""].json()["running"]["ok"]
        assert "inbox" in ready["/accepting"].json()

        with httpx.Client(timeout=10) as client:
            assert client.post(hook, json={"n": "before"}).status_code == 200
            deadline = time.monotonic() + 30
            while "before" not in sink.arrived:
                assert time.monotonic() < deadline, serve.output()
                time.sleep(0.05)
            time.sleep(1.5)  # the zap's live flow run closes (idle 1 s)

            cable.unplug()
            deadline = time.monotonic() + 15
            while (ready := readiness(base))["/running"].status_code != 503:
                assert time.monotonic() < deadline, ready["/running"].text
                time.sleep(0.2)
            assert ready["/accepting"].status_code == 200
            whole = ready[""]
            assert whole.status_code == 503, whole.text
            body = whole.json()
            assert body["ready"] is False and body["accepting"]["ok"] is True
            assert body["running"]["ok"] is False
            assert body["error"].startswith("running: Prefect unreachable since ")
            assert "accepted events wait in the inbox and run when it answers" in body["error"]
            serve.wait_for(r"Prefect's server does not answer")

            # Deliveries go on being accepted, and wait.
            for n in range(30):
                assert client.post(hook, json={"n": str(n)}).status_code == 200
                time.sleep(0.25)  # spread over the outage: the dispatcher backs off meanwhile
            assert not any(str(n) in sink.arrived for n in range(30))

        cable.plug()
        back = time.monotonic()
        deadline = back + 30
        while not all(str(n) in sink.arrived for n in range(30)):
            assert time.monotonic() < deadline, sorted(sink.arrived)
            time.sleep(0.05)
        drained = max(sink.arrived[str(n)] for n in range(30)) - back
        # The probe runs every 2 s; then everything waiting runs at once.
        assert drained < 6, drained
        section = "Prefect server unreachable for ~8 s under zapflow serve"
        figures.record(section, "deliveries accepted meanwhile", 30)
        figures.record(section, "all run after it answered again (s)", round(drained, 2))
        deadline = time.monotonic() + 10
        while (ready := readiness(base))[""].status_code != 200:
            assert time.monotonic() < deadline, ready[""].text
            time.sleep(0.2)
        serve.wait_for(r"Prefect's server answers again")
    finally:
        code = serve.stop()
    assert code == 0, serve.output()
