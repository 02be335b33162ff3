"""The Slack app against the Slack sandbox (connectors/slack/sandbox.py), a loopback service
that answers as Slack's Web API and incoming webhooks do: posting to channels and threads with
a bot token, posting to a webhook, Slack's own refusals turned into the error class that tells
the engine what to do next, and the token and webhook URL kept out of errors and run history."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors import ActionContext, registry
from connectors._chat_webhooks import close_all
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.slack import web_api
from connectors.slack.connection import SlackConnection
from connectors.slack.sandbox import SlackSandbox, run_in_thread
from flows.loader import load_zap_text

TOKEN = "xoxb-1111-2222-" + "s3cr3t" * 4
LIMITED = "xoxb-3333-4444-" + "l1m1t3d" * 3
"""A token without chat:write.customize."""
REVOKED = "xoxb-5555-6666-" + "r3v0k3d" * 3
HOOK_SECRET = "T0ACME/B0SALES/" + "h00k" * 6


# --------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def running_slack() -> Iterator[SlackSandbox]:
    """The product's Slack sandbox, with this module's tokens and webhook secret."""
    double = SlackSandbox(
        bot_token=TOKEN, hook_secret=HOOK_SECRET, limited_tokens={LIMITED}, revoked_tokens={REVOKED}
    )
    with run_in_thread(double) as slack:
        yield slack


@pytest.fixture
def slack(running_slack: SlackSandbox) -> SlackSandbox:
    running_slack.reset()
    return running_slack


@pytest.fixture(scope="module", autouse=True)
async def _close_pooled_clients() -> Any:
    yield
    await close_all()


# --------------------------------------------------------------------------- helpers


def connection(
    slack: SlackSandbox, token: str = TOKEN, mode: str = "", hook: str = ""
) -> SlackConnection:
    """A connection to the fake Slack; ``mode`` picks how its webhook answers."""
    hook = hook or f"{slack.url}/services/{HOOK_SECRET}" + (f"/x/{mode}" if mode else "")
    return SlackConnection.model_validate(
        {"bot_token": token, "webhook_url": hook, "api_base_url": f"{slack.url}/api"}
    )


def context(conn: SlackConnection | None, name: str | None = "acme") -> ActionContext:
    return ActionContext(
        zap_id="orders",
        step_id="tell",
        run_id="r",
        event_id=uuid.uuid4().hex,
        connection=conn,
        connection_name=name if conn is not None else None,
    )


async def call(name: str, data: dict[str, Any], conn: SlackConnection | None) -> Any:
    """Run ``slack.<name>`` as the engine does: validate the input, then run the action."""
    action = registry.action(f"slack.{name}")
    out = await action.run(action.input_model.model_validate(data), context(conn))
    assert isinstance(out, action.output_model)
    return out


BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "New order 1001"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Chan Tai Man* · HK$1,250.50"}},
]


# --------------------------------------------------------------------------- chat.postMessage


async def test_a_bot_posts_to_a_channel_and_replies_in_the_thread(slack: SlackSandbox) -> None:
    conn = connection(slack)
    first = await call(
        "post_message",
        {"channel": "C0SALES", "text": "New order 1001", "blocks": BLOCKS},
        conn,
    )
    reply = await call(
        "post_message",
        {"channel": first.channel, "thread_ts": first.ts, "text": "Shipped", "reply_broadcast": 1},
        conn,
    )
    assert (first.channel, first.thread_ts) == ("C0SALES", None)
    assert reply.thread_ts == first.ts and reply.ts > first.ts
    sent, answered = slack.posted
    assert sent.token == TOKEN
    assert sent.body == {"channel": "C0SALES", "text": "New order 1001", "blocks": BLOCKS}
    assert answered.body == {
        "channel": "C0SALES",
        "text": "Shipped",
        "thread_ts": first.ts,
        "reply_broadcast": True,
    }
    assert json.loads(json.dumps(first.model_dump(mode="json")))


async def test_a_channel_by_name_a_custom_name_and_icon(slack: SlackSandbox) -> None:
    out = await call(
        "post_message",
        {
            "channel": "#sales",
            "text": "Hi",
            "username": "Order bot",
            "icon_emoji": ":package:",
            "unfurl_links": False,
        },
        connection(slack),
    )
    assert out.channel == "C0SALES"
    assert slack.posted[0].body == {
        "channel": "#sales",
        "text": "Hi",
        "username": "Order bot",
        "icon_emoji": ":package:",
        "unfurl_links": False,
    }


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"channel": "C0NOPE"}, "channel_not_found (check the channel id, and invite the bot"),
        ({"channel": "C0PRIVATE"}, "not_in_channel (invite the bot to the channel"),
        ({"channel": "C0ARCHIVED"}, "is_archived"),
        (
            {"blocks": [{"text": "no type"}]},
            "invalid_blocks (the blocks are not valid Block Kit; [ERROR] missing required "
            "field: type [json-pointer:/blocks/0])",
        ),
        ({"thread_ts": "1.000001"}, "thread_not_found"),
    ],
)
async def test_slacks_refusals_fail_for_good_naming_slacks_error(
    slack: SlackSandbox, data: dict[str, Any], says: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await call("post_message", {"channel": "C0SALES", "text": "x", **data}, connection(slack))
    assert not isinstance(caught.value, AuthError)
    assert str(caught.value).startswith("Slack refused chat.postMessage: ")
    assert says in str(caught.value)
    assert slack.posted == []


async def test_a_missing_scope_names_the_scope(slack: SlackSandbox) -> None:
    data = {"channel": "C0SALES", "text": "x", "username": "Order bot"}
    with pytest.raises(PermanentError, match="missing_scope .*needed: chat:write.customize"):
        await call("post_message", data, connection(slack, LIMITED))


@pytest.mark.parametrize(
    ("token", "error"),
    [("xoxb-wrong", "invalid_auth"), (REVOKED, "token_revoked")],
)
async def test_a_refused_token_is_an_auth_error_without_the_token(
    slack: SlackSandbox, token: str, error: str
) -> None:
    conn = connection(slack, token)
    with pytest.raises(AuthError) as caught:
        await call("post_message", {"channel": "C0SALES", "text": "x"}, conn)
    message = str(caught.value)
    assert f"Slack refused chat.postMessage: {error}" in message
    assert "zapflow connections rekey slack acme" in message
    assert token not in message and token not in repr(conn)


@pytest.mark.parametrize("error", ["not_authed", "token_expired", "account_inactive"])
def test_every_kind_of_refused_token_is_an_auth_error(error: str) -> None:
    refused = web_api.refusal({"ok": False, "error": error}, "chat.postMessage", "acme")
    assert isinstance(refused, AuthError)
    assert str(refused).startswith(f"Slack refused chat.postMessage: {error}; the bot token")


async def test_a_429_is_retried_after_slacks_retry_after(slack: SlackSandbox) -> None:
    data = {"channel": "C0BUSY", "text": "flash sale"}
    with pytest.raises(RetryableError) as caught:
        await call("post_message", data, connection(slack))
    assert caught.value.retry_after == 1.0
    assert "HTTP 429" in str(caught.value) and "ratelimited" in str(caught.value)
    again = await call("post_message", data, connection(slack))  # the retry goes through
    assert again.channel == "C0BUSY"


async def test_slack_down_slow_or_unreachable_is_retryable(slack: SlackSandbox) -> None:
    with pytest.raises(RetryableError, match="HTTP 503: upstream connect error"):
        await call("post_message", {"channel": "C0DOWN", "text": "x"}, connection(slack))
    with pytest.raises(RetryableError, match="did not answer within 0.3 s"):
        data = {"channel": "C0SLOW", "text": "x", "timeout": 0.3}
        await call("post_message", data, connection(slack))
    gone = SlackConnection(bot_token=TOKEN, api_base_url="http://127.0.0.1:9/api")  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="could not reach Slack"):
        await call("post_message", {"channel": "C0SALES", "text": "x"}, gone)


async def test_post_message_needs_a_bot_token(slack: SlackSandbox) -> None:
    hook_only = SlackConnection(webhook_url=f"{slack.url}/services/{HOOK_SECRET}")  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match="needs a bot token"):
        await call("post_message", {"channel": "C0SALES", "text": "x"}, hook_only)
    with pytest.raises(PermanentError, match="needs a bot token"):
        await call("post_message", {"channel": "C0SALES", "text": "x"}, None)


# --------------------------------------------------------------------------- incoming webhooks


async def test_a_message_to_the_connections_incoming_webhook(slack: SlackSandbox) -> None:
    out = await call(
        "send_webhook_message", {"text": "New order 1001", "blocks": BLOCKS}, connection(slack)
    )
    assert out.response == "ok"
    assert slack.hooked == [{"text": "New order 1001", "blocks": BLOCKS}]


async def test_a_step_may_bring_its_own_webhook_url_and_no_connection(slack: SlackSandbox) -> None:
    url = f"{slack.url}/services/{HOOK_SECRET}"
    out = await call("send_webhook_message", {"text": "hi", "webhook_url": url}, None)
    assert out.response == "ok" and slack.hooked == [{"text": "hi"}]
    with pytest.raises(PermanentError, match="needs a webhook URL"):
        await call("send_webhook_message", {"text": "hi"}, None)


@pytest.mark.parametrize(
    ("mode", "data", "says"),
    [
        ("", {"blocks": [{"text": "no type"}]}, "HTTP 400: invalid_blocks"),
        ("archived", {"text": "x"}, "HTTP 410: channel_is_archived (the webhook's channel is"),
        ("prohibited", {"text": "x"}, "HTTP 403: action_prohibited (a workspace admin"),
    ],
)
async def test_a_webhooks_refusals_fail_for_good_in_slacks_words(
    slack: SlackSandbox, mode: str, data: dict[str, Any], says: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await call("send_webhook_message", data, connection(slack, mode=mode))
    assert not isinstance(caught.value, AuthError)
    assert says in str(caught.value)
    assert HOOK_SECRET not in str(caught.value)
    assert str(caught.value).startswith("Slack's incoming webhook answered")


@pytest.mark.parametrize("mode", ["revoked", "gone"])
async def test_a_removed_webhook_is_an_auth_error(slack: SlackSandbox, mode: str) -> None:
    conn = connection(slack, mode=mode)
    if mode == "gone":  # a webhook Slack no longer knows: 404 no_service
        conn = connection(slack, hook=f"{slack.url}/services/T0ACME/B0OLD/xyz")
    with pytest.raises(AuthError, match="webhook is gone: make a new one and update connection"):
        await call("send_webhook_message", {"text": "x"}, conn)


async def test_a_busy_or_broken_webhook_is_retryable(slack: SlackSandbox) -> None:
    with pytest.raises(RetryableError) as caught:
        await call("send_webhook_message", {"text": "x"}, connection(slack, mode="busy"))
    assert caught.value.retry_after == 3.0
    with pytest.raises(RetryableError, match="HTTP 500"):
        await call("send_webhook_message", {"text": "x"}, connection(slack, mode="down"))
    dead = SlackConnection(webhook_url=f"http://127.0.0.1:9/services/{HOOK_SECRET}")  # type: ignore[arg-type]
    with pytest.raises(
        RetryableError, match=r"could not reach Slack's incoming webhook \(http://127.0.0.1:9/…\)"
    ) as caught:
        await call("send_webhook_message", {"text": "x"}, dead)
    assert HOOK_SECRET not in str(caught.value)


# --------------------------------------------------------------------------- input, connection


def problems(action: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        registry.action(f"slack.{action}").input_model.model_validate(data)
    return [
        (".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors(include_url=False)
    ]


@pytest.mark.parametrize(
    ("action", "data", "where", "says"),
    [
        ("post_message", {"channel": "C0SALES"}, "", "give text, blocks or both"),
        ("post_message", {"text": "x"}, "channel", "Field required"),
        (
            "post_message",
            {"channel": "C", "text": "x", "thread_ts": 1764062400.000101},
            "thread_ts",
            "quote it",
        ),
        (
            "post_message",
            {"channel": "C", "text": "x", "reply_broadcast": True},
            "",
            "give thread_ts too",
        ),
        (
            "post_message",
            {"channel": "C", "text": "x", "icon_emoji": ":a:", "icon_url": "https://x"},
            "",
            "not both",
        ),
        ("post_message", {"channel": "C", "text": "x", "colour": "red"}, "colour", "Extra inputs"),
        ("send_webhook_message", {"blocks": []}, "", "give text, blocks or both"),
    ],
)
def test_bad_input_names_the_field(
    action: str, data: dict[str, Any], where: str, says: str
) -> None:
    found = problems(action, data)
    assert any(loc == where and says in msg for loc, msg in found), found


async def test_a_webhook_url_that_is_not_a_url_is_refused_without_repeating_it() -> None:
    data = {"text": "x", "webhook_url": "hooks.slack.com/services/" + HOOK_SECRET}
    with pytest.raises(PermanentError, match="webhook_url must be an http") as caught:
        await call("send_webhook_message", data, None)
    assert HOOK_SECRET not in str(caught.value)


def test_a_connection_needs_a_token_or_a_webhook_and_hides_them() -> None:
    with pytest.raises(ValidationError, match="give a bot_token, a webhook_url or both"):
        SlackConnection.model_validate({"bot_token": "", "webhook_url": "", "api_base_url": ""})
    with pytest.raises(ValidationError) as caught:
        SlackConnection.model_validate({"webhook_url": "not a url/" + HOOK_SECRET})
    assert HOOK_SECRET not in str(caught.value)
    conn = SlackConnection.model_validate({"bot_token": TOKEN, "api_base_url": ""})
    assert conn.api_base_url == "https://slack.com/api"
    assert TOKEN not in repr(conn)


async def test_the_connection_check_calls_auth_test(slack: SlackSandbox) -> None:
    app = registry.app("slack")
    assert app.check is not None
    note = await app.check(connection(slack), "acme")
    assert note == "Slack accepted the bot token: zapbot in Acme HK"
    with pytest.raises(AuthError):
        await app.check(connection(slack, REVOKED), "acme")
    hook_only = SlackConnection(webhook_url=f"{slack.url}/services/{HOOK_SECRET}")  # type: ignore[arg-type]
    assert "not checked" in await app.check(hook_only, "acme")


# --------------------------------------------------------------------------- real zap runs

THREAD_ZAP = """\
zap: {zap_id}
trigger:
  app: builtin
  event: catch_hook
defaults:
  retries: 2
  retry_delay: 0.05s
  retry_jitter: 0
steps:
  - id: post
    action: slack.post_message
    connection: acme
    input:
      channel: "{{{{ trigger.channel }}}}"
      text: "New order {{{{ trigger.id }}}} from {{{{ trigger.customer }}}}"
  - id: reply
    action: slack.post_message
    connection: acme
    input:
      channel: "{{{{ steps.post.channel }}}}"
      thread_ts: "{{{{ steps.post.ts }}}}"
      text: Packed and shipped
  - id: tell_team
    action: slack.send_webhook_message
    connection: acme
    input:
      text: "Order {{{{ trigger.id }}}} posted at {{{{ steps.post.ts }}}}"
"""


@pytest.mark.usefixtures("prefect_api")
def test_a_zap_posts_replies_in_the_thread_and_tells_a_webhook(
    slack: SlackSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection from the environment; the first post is rate limited once (Retry-After:
    1), so its retry waits a second; the reply reads the first post's ts."""
    import time

    from flows import connections
    from flows.compiler import run_with_history
    from flows.events import Event

    monkeypatch.setenv("ZAPFLOW_SLACK_ACME_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ZAPFLOW_SLACK_ACME_WEBHOOK_URL", f"{slack.url}/services/{HOOK_SECRET}")
    monkeypatch.setenv("ZAPFLOW_SLACK_ACME_API_BASE_URL", f"{slack.url}/api")
    connections.forget("slack", "acme")
    zap = load_zap_text(THREAD_ZAP.format(zap_id=f"slack-thread-{uuid.uuid4().hex[:6]}"))
    payload = {"id": "order-1001", "customer": "Chan Tai Man", "channel": "C0BUSY"}
    started = time.monotonic()
    event = Event(app="builtin", trigger="catch_hook", payload=payload)
    state = asyncio.run(run_with_history(zap, event))
    assert state.is_completed(), state.message
    assert time.monotonic() - started >= 1.0  # Retry-After: 1, not the step's 0.05 s
    post, reply = slack.posted
    assert post.body["text"] == "New order order-1001 from Chan Tai Man"
    ts = min(slack.issued)  # the first post's
    assert reply.body == {"channel": "C0BUSY", "text": "Packed and shipped", "thread_ts": ts}
    assert slack.hooked == [{"text": f"Order order-1001 posted at {ts}"}]


def test_zapflow_slack_sandbox_serves_and_prints_what_it_receives(tmp_path):
    """`zapflow slack-sandbox --port P --bot-token T`: answers chat.postMessage and incoming
    webhooks as Slack does, and prints each message."""
    import subprocess
    import sys
    import time

    from serve_process import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import main; main()", "slack-sandbox"]
        + ["--port", str(port), "--bot-token", "xoxb-fixed-1", "--hook-secret", "T0/B0/fixed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                refused = httpx.post(f"{base}/api/chat.postMessage", json={}, timeout=2)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the Slack sandbox did not start"
                time.sleep(0.2)
        assert refused.json() == {"ok": False, "error": "not_authed"}
        posted = httpx.post(
            f"{base}/api/chat.postMessage",
            headers={"Authorization": "Bearer xoxb-fixed-1"},
            json={"channel": "#sales", "text": "New order 1001"},
        ).json()
        assert posted["ok"] is True and posted["channel"] == "C0SALES"
        hooked = httpx.post(f"{base}/services/T0/B0/fixed", json={"text": "From a webhook"})
        assert hooked.text == "ok"
        time.sleep(0.6)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "--set bot_token=xoxb-fixed-1" in output
    assert f"--set webhook_url=http://127.0.0.1:{port}/services/T0/B0/fixed" in output
    assert "#sales: New order 1001" in output and "webhook: From a webhook" in output
