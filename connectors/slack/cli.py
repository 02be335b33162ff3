"""``zapflow slack-sandbox``: a local Slack to try zaps against, printing what it receives.

The same sandbox ``zapflow demo`` starts (``connectors/slack/sandbox.py``), served in the
foreground on a fixed port, with a bot token and webhook secret that stay the same across
restarts when given (``--bot-token``, ``--hook-secret`` or their environment variables), so a
stored connection keeps working.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8766

app = typer.Typer(
    name="slack-sandbox",
    help="A local Slack (chat.postMessage, incoming webhooks) to try zaps against; prints each "
    "message it receives. Ctrl-C stops it.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)

if TYPE_CHECKING:
    from connectors.slack.sandbox import SlackSandbox


@app.callback()
def serve(
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Where to listen"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="The port"),
    bot_token: str = typer.Option(
        None,
        "--bot-token",
        envvar="ZAPFLOW_SLACK_SANDBOX_BOT_TOKEN",
        help="The bot token it accepts (default: a new random one)",
    ),
    hook_secret: str = typer.Option(
        None,
        "--hook-secret",
        envvar="ZAPFLOW_SLACK_SANDBOX_HOOK_SECRET",
        help="The secret part of its incoming-webhook URL (default: a new random one)",
    ),
) -> None:
    """Serve the Slack sandbox until Ctrl-C."""
    import uvicorn

    from connectors.slack.sandbox import SlackSandbox

    sandbox = SlackSandbox()
    sandbox.bot_token = bot_token or sandbox.bot_token
    sandbox.hook_secret = hook_secret or sandbox.hook_secret
    sandbox.url = f"http://{host}:{port}"
    out.print(f"Slack sandbox on {sandbox.url}  (channels #sales, #customer-care)")
    out.print("connect zapflow to it (stored as the slack connection 'sandbox' the examples use):")
    out.print(
        "  zapflow connect slack sandbox --no-check "
        f"--set bot_token={sandbox.bot_token} --set api_base_url={sandbox.api_base_url} "
        f"--set webhook_url={sandbox.webhook_url}",
        markup=False,
    )
    threading.Thread(target=_print_messages, args=(sandbox,), daemon=True).start()
    uvicorn.run(sandbox.app(), host=host, port=port, log_level="warning")


def _print_messages(sandbox: SlackSandbox) -> None:
    posts = hooks = 0
    while True:
        time.sleep(0.2)
        messages = sandbox.messages()  # posts first, then webhook messages
        now_posts, now_hooks = len(sandbox.posted), len(sandbox.hooked)
        new = messages[posts:now_posts] + messages[now_posts + hooks : now_posts + now_hooks]
        for where, text in new:
            out.print(f"{where}: {text}", markup=False)
        posts, hooks = now_posts, now_hooks
