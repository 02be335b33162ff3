"""The Teams app against a loopback service that answers as Teams webhooks do: a Workflows
webhook (202, empty) and a classic incoming webhook (200 "1", or 200 with an error text when
Teams refused the message), each failure turned into the right error class, the webhook URL
kept out of messages."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connectors import ActionContext, registry
from connectors._chat_webhooks import close_all
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors._loopback import serve_in_thread
from connectors.teams.actions import ADAPTIVE_CARD
from connectors.teams.connection import TeamsConnection

SECRET = "sig=" + "t3ams" * 8
CLASSIC_429 = (
    "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error "
    "429 with ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=deadbeef"
)


@dataclass
class FakeTeams:
    """``/workflow/<mode>?<secret>`` and ``/classic/<mode>?<secret>`` on loopback."""

    url: str = ""
    cards: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{kind}/{mode}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        kind, mode = request.path_params["kind"], request.path_params["mode"]
        if request.url.query != SECRET:
            return PlainTextResponse('{"error":{"code":"DirectApiInvalidSignature"}}', 401)
        answers = {
            "gone": (404, '{"error":{"code":"WorkflowNotFound"}}'),
            "busy": (429, "Too many requests"),
            "down": (502, "Bad gateway"),
            "classic-busy": (200, CLASSIC_429),
        }
        if mode in answers:
            status, text = answers[mode]
            return PlainTextResponse(text, status, headers={"Retry-After": "4"})
        body = json.loads(await request.body())
        (attachment,) = body["attachments"]
        if attachment["contentType"] != ADAPTIVE_CARD or not attachment["content"].get("body"):
            return PlainTextResponse("Summary or Text is required.", 400)
        self.cards.append(attachment["content"])
        return Response(status_code=202) if kind == "workflow" else PlainTextResponse("1")


@pytest.fixture(scope="module")
def teams() -> Iterator[FakeTeams]:
    fake = FakeTeams()
    with serve_in_thread(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture(scope="module", autouse=True)
async def _close_pooled_clients() -> Any:
    yield
    await close_all()


def connection(teams: FakeTeams, path: str = "workflow/ok", secret: str = SECRET) -> Any:
    return TeamsConnection.model_validate({"webhook_url": f"{teams.url}/{path}?{secret}"})


async def send(data: dict[str, Any], conn: TeamsConnection | None) -> Any:
    action = registry.action("teams.send_message")
    ctx = ActionContext(
        zap_id="orders",
        step_id="tell",
        run_id="r",
        event_id=uuid.uuid4().hex,
        connection=conn,
        connection_name="sales" if conn is not None else None,
    )
    out = await action.run(action.input_model.model_validate(data), ctx)
    assert isinstance(out, action.output_model)
    return out


@pytest.mark.parametrize(
    ("path", "status", "response"), [("workflow", 202, ""), ("classic", 200, "1")]
)
async def test_a_title_and_text_arrive_as_an_adaptive_card(
    teams: FakeTeams, path: str, status: int, response: str
) -> None:
    teams.cards.clear()
    data = {"title": "New order 1001", "text": "**Chan Tai Man** · HK$1,250.50"}
    out = await send(data, connection(teams, f"{path}/ok"))
    assert (out.status, out.response) == (status, response)
    (card,) = teams.cards
    assert card["type"] == "AdaptiveCard"
    assert [(b["text"], b.get("weight")) for b in card["body"]] == [
        ("New order 1001", "Bolder"),
        ("**Chan Tai Man** · HK$1,250.50", None),
    ]


async def test_a_card_of_your_own_and_a_url_given_by_the_step(teams: FakeTeams) -> None:
    teams.cards.clear()
    card = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "FactSet", "facts": [{"title": "Order", "value": "1001"}]}],
    }
    url = f"{teams.url}/workflow/ok?{SECRET}"
    await send({"card": card, "webhook_url": url}, None)
    assert teams.cards == [card]


async def test_a_refused_card_fails_for_good_with_teams_answer(teams: FakeTeams) -> None:
    empty = {"type": "AdaptiveCard", "version": "1.4", "body": []}
    with pytest.raises(PermanentError) as caught:
        await send({"card": empty}, connection(teams, "classic/ok"))
    assert not isinstance(caught.value, AuthError)
    assert "HTTP 400: Summary or Text is required." in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("path", "secret"), [("workflow/gone", SECRET), ("workflow/ok", "sig=x")])
async def test_a_webhook_that_is_gone_or_refuses_its_url_is_an_auth_error(
    teams: FakeTeams, path: str, secret: str
) -> None:
    with pytest.raises(AuthError, match="make a new one and update connection 'sales'") as caught:
        await send({"text": "x"}, connection(teams, path, secret))
    assert SECRET not in str(caught.value) and "/workflow/" not in str(caught.value)


async def test_busy_or_broken_teams_is_retried(teams: FakeTeams) -> None:
    with pytest.raises(RetryableError) as caught:
        await send({"text": "x"}, connection(teams, "workflow/busy"))
    assert caught.value.retry_after == 4.0
    with pytest.raises(RetryableError, match="HTTP 502"):
        await send({"text": "x"}, connection(teams, "workflow/down"))
    with pytest.raises(RetryableError, match="returned HTTP error 429"):
        await send({"text": "x"}, connection(teams, "classic/classic-busy"))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({}, "give text (and a title if you like), or a card"),
        ({"text": "x", "card": {"type": "AdaptiveCard"}}, "not both"),
        ({"card": {"type": "MessageCard"}}, "an Adaptive Card has type: AdaptiveCard"),
    ],
)
def test_bad_input_says_what_is_allowed(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        registry.action("teams.send_message").input_model.model_validate(data)


async def test_a_step_needs_a_webhook_url() -> None:
    with pytest.raises(PermanentError, match="needs a webhook URL"):
        await send({"text": "x"}, None)
    with pytest.raises(ValidationError, match="webhook_url must be an http"):
        TeamsConnection.model_validate({"webhook_url": "prod-12.westus.logic.azure.com/x"})
