"""Who may publish over HTTP: ``/say`` is closed until the app sets ``SSE_PUBLISH_TOKEN`` or
opts in with ``SSE_OPEN_PUBLISH``; a page from another site never publishes through its
visitors' browsers; a private channel needs the token even when publishing is open.
``sse.publish()`` from Python is not concerned.

Contract lines pinned: the ``/say`` rows of the error table (401 for a missing or wrong
token, 403 when publishing is off, from another site, or into a private channel without the
token), ``SSE_OPEN_PUBLISH`` and its start-up warning under any server.
"""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask
from helpers.servers import Server
from werkzeug.test import TestResponse

from sse_flask import SSE
from sse_flask.config import DEFAULTS

TOKEN = "publish-policy token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FOREIGN = "https://evil.example"
LISTED = "https://app.example"


@pytest.fixture(autouse=True)
def _no_sse_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test's app.config only, whatever the shell exported."""
    for key in DEFAULTS:
        monkeypatch.delenv(key, raising=False)


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    SSE(app)
    return app


def error(response: TestResponse) -> str:
    """The ``error`` of a JSON error answer."""
    return str(t.cast(dict[str, t.Any], response.json)["error"])


def published(app: Flask) -> int:
    return int(app.extensions["sse"].broker.stats()["published"])


def test_closed_by_default() -> None:
    """With neither setting, /say answers 403 naming both ways to open it, and publishes nothing."""
    app = make_app()
    client = app.test_client()
    for response in (
        client.get("/say?msg=x"),
        client.post("/say", json={"data": "x"}),
        client.post("/say", data={"data": "x"}),
    ):
        assert response.status_code == 403
        assert "SSE_PUBLISH_TOKEN" in error(response) and "SSE_OPEN_PUBLISH" in error(response)
    assert published(app) == 0
    assert app.extensions["sse"].sse.publish("from Python") and published(app) == 1


def test_open_publish() -> None:
    """SSE_OPEN_PUBLISH lets requests without a token publish into public channels only."""
    app = make_app(SSE_OPEN_PUBLISH=True)
    client = app.test_client()
    assert client.get("/say?msg=x").status_code == 200
    assert client.post("/say", data={"data": "x", "channel": "news"}).status_code == 200
    for response in (
        client.get("/say?msg=x&channel=user:alice"),
        client.post("/say", json={"data": "x", "channel": "user:alice"}),
    ):
        assert response.status_code == 403
        assert "private" in error(response) and "SSE_PUBLISH_TOKEN" in error(response)
    assert published(app) == 2


def test_publish_token() -> None:
    """With SSE_PUBLISH_TOKEN, the bearer token publishes, private channels included; a
    request without it, or with another, is refused with 401 and publishes nothing."""
    app = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    client = app.test_client()
    assert client.get("/say?msg=x").status_code == 401
    assert client.get("/say?msg=x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert published(app) == 0
    assert client.get("/say?msg=x&channel=user:alice", headers=BEARER).status_code == 200
    assert client.post("/say", json={"data": "x"}, headers=BEARER).status_code == 200
    assert published(app) == 2


@pytest.mark.parametrize(
    ("headers", "form", "status"),
    [
        ({"Origin": FOREIGN}, True, 403),
        ({"Origin": FOREIGN}, False, 403),
        ({"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}, True, 403),
        ({"Origin": "null"}, True, 403),
        # A cross-site GET (an <img>, a link) sends Sec-Fetch-Site but no Origin.
        ({"Sec-Fetch-Site": "cross-site"}, None, 403),
        ({"Sec-Fetch-Site": "same-site"}, None, 403),
        ({"Origin": LISTED}, True, 403),
        ({"Origin": LISTED, "Sec-Fetch-Site": "cross-site"}, False, 200),
        ({"Origin": LISTED}, None, 200),
        ({"Origin": "http://localhost"}, True, 200),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://proxy.example"}, True, 200),
        ({"Sec-Fetch-Site": "none"}, None, 200),
        ({}, True, 200),
        # No browser sends an empty Origin: it is treated as none.
        ({"Origin": ""}, True, 200),
    ],
)
@pytest.mark.parametrize("config", [{"SSE_OPEN_PUBLISH": True}, {"SSE_PUBLISH_TOKEN": TOKEN}])
def test_cross_site(
    config: dict[str, t.Any], headers: dict[str, str], form: bool | None, status: int
) -> None:
    """Only same-origin requests, and listed origins sending JSON, publish; ``form`` None is a GET.

    With the token too: a page could hold it, and a form posted from another site must
    never publish.
    """
    app = make_app(SSE_CORS_ORIGINS=[LISTED], **config)
    client = app.test_client()
    headers = {**headers, **(BEARER if "SSE_PUBLISH_TOKEN" in config else {})}
    if form is None:
        response = client.get("/say?msg=x", headers=headers)
    elif form:
        response = client.post("/say", data={"data": "x"}, headers=headers)
    else:
        response = client.post("/say", json={"data": "x"}, headers=headers)
    assert response.status_code == status, response.json
    assert published(app) == (status == 200)
    if status == 403:
        assert "SSE_CORS_ORIGINS" in error(response) or "JSON" in error(response)


def test_any_origin_still_needs_json() -> None:
    """SSE_CORS_ORIGINS ``*`` lets any origin publish JSON, never a form."""
    app = make_app(SSE_CORS_ORIGINS="*", SSE_OPEN_PUBLISH=True)
    client = app.test_client()
    assert client.post("/say", json={"data": "x"}, headers={"Origin": FOREIGN}).status_code == 200
    refused = client.post("/say", data={"data": "x"}, headers={"Origin": FOREIGN})
    assert refused.status_code == 403 and "JSON" in error(refused)
    assert published(app) == 1


@pytest.mark.parametrize(
    ("config", "warned"),
    [
        ({"SSE_OPEN_PUBLISH": True}, True),
        ({}, False),
        ({"SSE_PUBLISH_TOKEN": TOKEN}, False),
        ({"SSE_PUBLISH_TOKEN": TOKEN, "SSE_OPEN_PUBLISH": True}, False),
    ],
)
def test_open_publish_warns_at_setup(
    caplog: pytest.LogCaptureFixture, config: dict[str, t.Any], warned: bool
) -> None:
    """init_app itself warns that anyone may publish, so every server's log says so."""
    with caplog.at_level(logging.WARNING):
        make_app(**config)
    warnings = [
        record for record in caplog.records if "SSE_OPEN_PUBLISH is on" in record.getMessage()
    ]
    assert len(warnings) == warned
    assert all(record.levelno == logging.WARNING for record in warnings)


# --- under plain gunicorn ------------------------------------------------------------------


def test_mounted_app_under_plain_gunicorn(launch: t.Callable[..., Server]) -> None:
    """An app that only calls ``sse.init_app(app)``: a GET into a private channel and a form
    posted from another site are refused and publish nothing; with SSE_PUBLISH_TOKEN the
    bearer token publishes, and a foreign form still does not."""
    closed = launch("gevent", "apps.mounted:create_app")
    phish = closed.get("/say", params={"msg": "phish", "channel": "user:alice"})
    forged = closed.post("/say", data={"data": "forged"}, headers={"Origin": FOREIGN})
    assert (phish.status_code, forged.status_code) == (403, 403)
    assert (
        "SSE_PUBLISH_TOKEN" in phish.json()["error"]
        and "SSE_OPEN_PUBLISH" in forged.json()["error"]
    )
    assert closed.stats()["published"] == 0
    assert "SSE_OPEN_PUBLISH is on" not in closed.log()

    guarded = launch("gevent", "apps.mounted:create_app", env={"SSE_PUBLISH_TOKEN": TOKEN})
    assert guarded.get("/say", params={"msg": "x", "channel": "user:alice"}).status_code == 401
    forged = guarded.post("/say", data={"data": "forged"}, headers={"Origin": FOREIGN, **BEARER})
    assert forged.status_code == 403 and "SSE_CORS_ORIGINS" in forged.json()["error"]
    assert guarded.stats()["published"] == 0
    sent = guarded.get("/say", params={"msg": "x", "channel": "user:alice"}, headers=BEARER)
    assert sent.status_code == 200 and sent.json()["channel"] == "user:alice"
    assert guarded.stats()["published"] == 1


def test_open_publish_warns_under_plain_gunicorn(launch: t.Callable[..., Server]) -> None:
    """SSE_OPEN_PUBLISH is logged as a WARNING by the worker that loads the app, without
    ``serve``."""
    server = launch("gevent", "apps.mounted:create_app", env={"SSE_OPEN_PUBLISH": "true"})
    assert "SSE_OPEN_PUBLISH is on: /say publishes from anyone" in server.log()
    assert server.get("/say", params={"msg": "x"}).status_code == 200
    assert server.stats()["published"] == 1


def test_demo_inbox_say() -> None:
    """The demo opts in to open publishing, yet its private inboxes take messages only through
    its own view, and only as JSON: a page from another site cannot send that without the
    CORS preflight the demo never grants (text/plain is what a form can send)."""
    from sse_flask.demo import create_app

    app = create_app()
    client = app.test_client()
    assert client.post("/say", json={"data": "x", "channel": "user:alice"}).status_code == 403
    sent = client.post("/inbox-say", json={"user": "alice", "data": "hi"})
    assert sent.status_code == 200 and t.cast(dict[str, str], sent.json)["channel"] == "user:alice"
    as_text = client.post(
        "/inbox-say", data='{"user": "alice", "data": "x"}', content_type="text/plain"
    )
    assert as_text.status_code == 400 and "JSON" in error(as_text)
    assert client.post("/inbox-say", json={"user": "a b", "data": "x"}).status_code == 400
    assert client.post("/inbox-say", json={"user": "alice"}).status_code == 400
    assert (
        client.post("/inbox-say", json={"user": "alice", "data": "x" * 70_000}).status_code == 413
    )
    assert published(app) == 1
