"""The receiver as senders see it: real HTTP on loopback, events committed before the 2xx,
clear 4xx errors, CINNOX's challenge and deliveries, signed catch hooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from connectors import registry
from connectors._signatures import SignatureError, sign, verify
from connectors.cinnox.triggers import to_wire
from flows.intake.inbox import Inbox
from flows.intake.receiver import AppHook, Hooks, ZapHook, create_app

pytest_plugins = ["cinnox_sandbox_fixtures"]

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Running:
    url: str
    inbox_url: str
    hooks: Hooks
    client: httpx.AsyncClient

    async def stored(self) -> list:
        """What a fresh Inbox on the same database sees: proof the event was committed."""
        other = await Inbox.open(self.inbox_url)
        try:
            return await other.claim("test-reader", limit=100, lease=60)
        finally:
            await other.close()


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Running]:
    inbox_url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(inbox_url)
    hooks = Hooks(
        zaps={
            "orders": ZapHook("orders", "tok-orders"),
            "signed": ZapHook("signed", "tok-s", SECRET),
        },
        apps={("cinnox", "main"): AppHook("cinnox", "main", "tok-cinnox")},
    )
    app = create_app(inbox, lambda: hooks, max_body=64 * 1024)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Running(f"http://127.0.0.1:{port}", inbox_url, hooks, client)
    server.should_exit = True
    await task
    await inbox.close()


async def test_a_catch_hook_event_is_committed_before_it_is_acknowledged(receiver):
    reply = await receiver.client.post("/hooks/zap/orders/tok-orders", json={"order": 1001})
    assert reply.status_code == 200
    body = reply.json()
    assert body["accepted"] is True and body["duplicate"] is False
    (stored,) = await receiver.stored()
    assert stored.id == body["event_id"] and stored.zap == "orders"
    assert stored.app == "builtin" and stored.trigger == "catch_hook"
    assert stored.payload == {"order": 1001}


async def test_a_redelivery_with_the_same_delivery_id_is_not_stored_twice(receiver):
    headers = {"webhook-id": "msg_2Lq"}
    first = await receiver.client.post(
        "/hooks/zap/orders/tok-orders", json={"a": 1}, headers=headers
    )
    again = await receiver.client.post(
        "/hooks/zap/orders/tok-orders", json={"a": 1}, headers=headers
    )
    assert first.json()["event_id"] == again.json()["event_id"]
    assert again.json()["duplicate"] is True
    assert len(await receiver.stored()) == 1
    other = await receiver.client.post("/hooks/zap/orders/tok-orders", json={"a": 1})
    assert other.json()["duplicate"] is False  # no delivery id: never dropped as a duplicate


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "error"),
    [
        ("/hooks/zap/orders/wrong", {"json": {}}, 404, "no such hook"),
        ("/hooks/zap/nobody/tok-orders", {"json": {}}, 404, "no such hook"),
        ("/hooks/cinnox/main/wrong/inquiry", {"json": {}}, 404, "no such hook"),
        (
            "/hooks/zap/orders/tok-orders",
            {"content": b"a=1", "headers": {"content-type": "application/x-www-form-urlencoded"}},
            415,
            "content-type must be application/json",
        ),
        (
            "/hooks/zap/orders/tok-orders",
            {"content": b'{"a": ', "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON",
        ),
        ("/hooks/zap/orders/tok-orders", {"json": [1, 2]}, 400, "must be a JSON object"),
        ("/hooks/zap/orders/tok-orders", {"json": {"x": "y" * 70_000}}, 413, "over the limit"),
        (
            "/hooks/cinnox/main/tok-cinnox/inquiry",
            {"content": b"[1", "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON",
        ),
    ],
)
async def test_bad_deliveries_get_a_clear_4xx_and_nothing_is_stored(
    receiver, path, kwargs, status, error
):
    reply = await receiver.client.post(path, **kwargs)
    assert reply.status_code == status
    assert error in reply.json()["error"]
    assert await receiver.stored() == []


@pytest.mark.parametrize("depth", [65, 300, 976, 1023, 1024, 5000])
@pytest.mark.parametrize(
    "path", ["/hooks/zap/orders/tok-orders", "/hooks/cinnox/main/tok-cinnox/inquiry"]
)
async def test_a_body_nested_too_deep_is_refused_with_the_limit(receiver, path, depth):
    body = '{"a": ' * depth + "1" + "}" * depth
    reply = await receiver.client.post(
        path, content=body.encode(), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json() == {"error": "the JSON nests arrays and objects more than 64 levels deep"}
    assert await receiver.stored() == []


async def test_a_body_at_the_nesting_limit_is_accepted(receiver):
    body = '{"a": ' * 64 + "1" + "}" * 64
    reply = await receiver.client.post(
        "/hooks/zap/orders/tok-orders",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    assert len(await receiver.stored()) == 1


async def test_signed_catch_hook(receiver):
    body = json.dumps({"order": 7}).encode()
    now = int(time.time())

    def headers(msg_id: str, stamp: int, signature: str) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
        }

    good = headers("msg_1", now, sign(SECRET, "msg_1", now, body))
    ok = await receiver.client.post("/hooks/zap/signed/tok-s", content=body, headers=good)
    assert ok.status_code == 200, ok.text
    forged = headers("msg_2", now, sign("whsec_b3RoZXI=", "msg_2", now, body))
    stale = headers("msg_3", now - 900, sign(SECRET, "msg_3", now - 900, body))
    for bad, reason in (
        (forged, "does not match"),
        (stale, "a replay?"),
        ({"content-type": "application/json"}, "missing webhook-id"),
    ):
        refused = await receiver.client.post("/hooks/zap/signed/tok-s", content=body, headers=bad)
        assert refused.status_code == 401 and reason in refused.json()["error"]
    assert len(await receiver.stored()) == 1


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False), (0, True), (-10_000, False)],
)
def test_signature_timestamps_are_accepted_within_300_s_either_way(skew, accepted):
    """A delivery stamped more than 300 s in the past *or the future* is refused (a replay, or
    a sender whose clock is off); 300 s exactly is still fine."""
    body, now = b'{"order": 7}', 1_750_000_000
    stamp = now + skew
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(SECRET, "msg_1", stamp, body),
    }
    if accepted:
        assert verify(SECRET, headers, body, now=now) == "msg_1"
    else:
        with pytest.raises(SignatureError, match="more than 300 s away from now"):
            verify(SECRET, headers, body, now=now)


def test_a_signature_header_may_carry_several_signatures():
    """Standard Webhooks: space-separated signatures (key rotation); any one valid is enough."""
    body, now = b"{}", 1_750_000_000
    good = sign(SECRET, "msg_1", now, body)
    other = sign("whsec_b3RoZXI=", "msg_1", now, body)
    base = {"webhook-id": "msg_1", "webhook-timestamp": str(now)}
    for header in (f"{other} {good}", f"{good} {other}", f"v1a,xyz {good}"):
        assert verify(SECRET, {**base, "webhook-signature": header}, body, now=now) == "msg_1"
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, {**base, "webhook-signature": f"{other} v1,{good[3:-4]}"}, body, now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, {**base, "webhook-signature": good.replace("v1,", "v2,")}, body, now=now)


@pytest.mark.parametrize(
    "path",
    [
        "/hooks/zap/orders/tok-order",  # the token's prefix
        "/hooks/zap/orders/tok-orders-and-more",  # the token and more
        "/hooks/zap/orders/TOK-ORDERS",
        "/hooks/cinnox/main/tok-cinno/inquiry",
    ],
)
async def test_only_the_whole_hook_token_opens_a_hook(receiver, path):
    reply = await receiver.client.post(path, json={"order": 1})
    assert reply.status_code == 404
    assert await receiver.stored() == []


async def test_cinnox_challenge_and_events_in_the_seed_keys(receiver):
    challenge = await receiver.client.post(
        "/hooks/cinnox/main/tok-cinnox/inquiry", json={"challenge": "c-123"}
    )
    assert challenge.json() == {"code": 0, "result": {"challenge": "c-123"}}
    assert await receiver.stored() == []

    sample = registry.trigger("cinnox", "missed_enquiry").samples[0]
    family, wire_body = to_wire("missed_enquiry", sample, service_id="svc", app_id="app")
    for _ in range(2):  # CINNOX redelivers: stored once
        reply = await receiver.client.post(
            f"/hooks/cinnox/main/tok-cinnox/{family}", json=wire_body
        )
        assert reply.status_code == 200 and reply.json()["code"] == 0
    (stored,) = await receiver.stored()
    assert stored.trigger == "missed_enquiry" and stored.connection == "main"
    assert stored.payload["enquiryID"] == sample["enquiryID"]
    assert stored.payload["destination Types"] == sample["destination Types"]


async def test_health_readiness_and_openapi(receiver):
    assert (await receiver.client.get("/healthz")).json() == {"status": "ok"}
    ready = await receiver.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and isinstance(body["accepting"]["inbox"], dict)
    assert body["running"] == {"ok": True, "reason": "runs drain"}
    accepting = await receiver.client.get("/readyz/accepting")
    assert accepting.status_code == 200 and accepting.json()["ok"] is True
    paths = (await receiver.client.get("/openapi.json")).json()["paths"]
    assert {"/readyz", "/readyz/accepting", "/readyz/running"} <= set(paths)
    assert "/hooks/zap/{zap_id}/{token}" in paths
    assert "/hooks/{app_name}/{connection}/{token}/{channel}" in paths
    catch = paths["/hooks/zap/{zap_id}/{token}"]["post"]
    assert {"200", "401", "413", "415"} <= set(catch["responses"])
    assert (
        "event_id"
        in catch["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    )
    docs = await receiver.client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


async def test_the_cinnox_sandbox_delivers_to_the_receiver(receiver, cinnox_sandbox):
    """The whole way: subscribe (CINNOX verifies the URL), an event fires, it is in the inbox."""
    url = f"{receiver.url}/hooks/cinnox/main/tok-cinnox/inquiry"
    subscribed = await asyncio.to_thread(cinnox_sandbox.subscribe, "inquiry", url)
    assert subscribed.status_code == 200, subscribed.text
    await asyncio.to_thread(cinnox_sandbox.control.emit, "missed_enquiry")
    deadline = time.monotonic() + 10
    while not (found := await receiver.stored()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    (event,) = found
    assert event.trigger == "missed_enquiry" and event.payload["status"] == "Missed"


def test_the_hook_table_serve_hands_the_receiver_round_trips_and_never_shows_secrets():
    hooks = Hooks(
        zaps={"signed": ZapHook("signed", "tok-s", SECRET, connection=None)},
        apps={("cinnox", "main"): AppHook("cinnox", "main", "tok-cinnox")},
    )
    line = hooks.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line per table on the pipe
    assert Hooks.from_line(line) == hooks
    shown = repr(hooks)
    assert "tok-s" not in shown and SECRET not in shown and "tok-cinnox" not in shown


def test_the_receiver_process_takes_its_hooks_and_body_limit_from_serve_and_exits_with_it(
    tmp_path: Path,
):
    """As `zapflow serve` runs it: the hook table on its standard input (a new line replaces
    it), `--max-body` from `zapflow serve --max-body`, and gone once serve's end of the pipe
    closes (serve was killed), so the port is free for the next start."""
    import subprocess
    import sys

    from serve_process import free_port

    inbox_url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    asyncio.run(_migrated(inbox_url))  # as serve does before starting it
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.intake.receiver_process import main; main()"]
        + ["--port", str(port), "--inbox", inbox_url, "--max-body", "100"],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(Hooks(zaps={"orders": ZapHook("orders", "tok-1")}).to_line())
        proc.stdin.flush()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "it never answered"
            time.sleep(0.05)
        assert httpx.post(f"{base}/hooks/zap/orders/tok-1", json={"a": 1}).status_code == 200
        big = httpx.post(f"{base}/hooks/zap/orders/tok-1", json={"a": "x" * 200})
        assert big.status_code == 413 and "limit of 100" in big.json()["error"]

        # serve's zaps changed: the new table replaces the old one
        proc.stdin.write(Hooks(zaps={"later": ZapHook("later", "tok-2")}).to_line())
        proc.stdin.flush()
        deadline = time.monotonic() + 5
        while httpx.post(f"{base}/hooks/zap/later/tok-2", json={}).status_code != 200:
            assert time.monotonic() < deadline, "the new hook table was not taken"
            time.sleep(0.05)
        assert httpx.post(f"{base}/hooks/zap/orders/tok-1", json={}).status_code == 404

        proc.stdin.close()  # what the kernel does when serve is killed
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _migrated(inbox_url: str) -> None:
    inbox = await Inbox.open(inbox_url)
    await inbox.close()


async def test_readiness_says_which_part_fails(tmp_path):
    """Prefect away: deliveries are still safe (accepting 200, for load balancers) but the
    whole is not ready (503, for monitoring), saying why; an inbox that cannot be read fails
    accepting too."""
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    why = "Prefect unreachable since 10:00:00 (ConnectError: refused)"
    app = create_app(inbox, lambda: Hooks(zaps={}, apps={}), running=lambda: (False, why))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        whole = await client.get("/readyz")
        assert whole.status_code == 503
        assert whole.json()["error"] == f"running: {why}"
        assert whole.json()["accepting"]["ok"] is True
        assert (await client.get("/readyz/accepting")).status_code == 200
        running = await client.get("/readyz/running")
        assert running.status_code == 503 and running.json() == {"ok": False, "error": why}

        async def unreadable() -> dict[str, int]:
            raise OSError("disk I/O error")

        inbox.counts = unreadable  # type: ignore[method-assign]  # the inbox's disk fails too
        whole = await client.get("/readyz")
        assert whole.status_code == 503
        assert whole.json()["error"].startswith("accepting: the inbox cannot be read: ")
        assert f"; running: {why}" in whole.json()["error"]
        assert (await client.get("/readyz/accepting")).status_code == 503
    await Inbox.close(inbox)
