"""Private channels: signed, expiring subscribe tokens passed as ``?token=``; public
channels need none; a stream ends when its token expires."""

from __future__ import annotations

import time
import typing as t

import itsdangerous
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.servers import Server
from helpers.sse import StreamClient

from sse_flask import SSE
from sse_flask.config import load_settings


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "a secret"
    app.config["SSE_HEARTBEAT"] = 0.05
    SSE(app)
    return app


def status(client: FlaskClient, query: str) -> tuple[int, str]:
    """Open /events?query and close it at once; the status and any error message."""
    response = client.get("/events?" + query, buffered=False)
    try:
        return response.status_code, (response.json or {}).get(
            "error", ""
        ) if response.is_json else ""
    finally:
        response.close()


def token(app: Flask, *channels: str, expires_in: float = 3600) -> str:
    with app.app_context():
        return str(app.extensions["sse"].sse.subscribe_token(*channels, expires_in=expires_in))


def test_a_token_for_user_1_does_not_open_user_2(app: Flask) -> None:
    client = app.test_client()
    mine = token(app, "user:1")
    assert status(client, f"channel=user:1&token={mine}") == (200, "")
    code, error = status(client, f"channel=user:2&token={mine}")
    assert code == 403 and "'user:2' is private" in error
    code, error = status(client, f"channel=user:1&channel=user:2&token={mine}")
    assert code == 403, "one refused channel refuses the stream"


def test_private_needs_a_token_public_does_not(app: Flask) -> None:
    client = app.test_client()
    code, error = status(client, "channel=user:1")
    assert code == 403 and "token" in error
    assert status(client, "channel=news")[0] == 200
    assert status(client, "")[0] == 200
    assert status(client, f"channel=news&channel=user:7&token={token(app, 'user:7')}")[0] == 200


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        "a.b.c",
        itsdangerous.URLSafeSerializer("another secret", salt="sse-flask.subscribe").dumps(
            {"c": ["user:1"], "e": 9e12}
        ),
    ],
    ids=["empty", "garbage", "dotted", "other secret"],
)
def test_forged_tokens_are_refused(app: Flask, bad: str) -> None:
    code, error = status(app.test_client(), f"channel=user:1&token={bad}")
    assert code == 403 and "not one this server signed" in error


def test_an_expired_token_is_refused(app: Flask) -> None:
    code, error = status(
        app.test_client(), f"channel=user:1&token={token(app, 'user:1', expires_in=-1)}"
    )
    assert code == 403 and "expired" in error


def test_minting_needs_a_secret_key_and_valid_channels() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    with app.app_context(), pytest.raises(RuntimeError, match="SECRET_KEY"):
        sse.subscribe_token("user:1")
    app.config["SECRET_KEY"] = "s"
    with app.app_context(), pytest.raises(ValueError, match="channel"):
        sse.subscribe_token("user 1")


def test_private_prefixes_are_configurable() -> None:
    assert load_settings({}, {"SSE_PRIVATE_PREFIXES": "team:, user:"}).private_prefixes == (
        "team:",
        "user:",
    )
    app = Flask(__name__)
    app.config.update(SECRET_KEY="s", SSE_PRIVATE_PREFIXES=["team:"])
    SSE(app)
    client = app.test_client()
    assert status(client, "channel=team:a")[0] == 403
    assert status(client, "channel=user:1")[0] == 200


def test_a_custom_authorizer_replaces_the_default(app: Flask) -> None:
    sse = app.extensions["sse"].sse
    sse.authorizer(lambda channel: channel != "news")
    client = app.test_client()
    assert status(client, "channel=user:1")[0] == 200
    assert status(client, "channel=news")[0] == 403


def test_a_stream_ends_when_its_token_expires(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient]
) -> None:
    """Against real gunicorn: the stream is open and receives while the token is valid,
    and the server closes it at expiry, not later; a new stream with it is then refused."""
    env = {"SSE_HEARTBEAT": "0.2", "SSE_PUBLISH_TOKEN": "tokens-test publisher"}
    server = serve(app="apps.tokens_app:create_app", env=env)
    lifetime = 2.0
    granted = server.get("/token", params={"user": "1", "seconds": str(lifetime)}).json()["token"]
    opened = time.monotonic()
    client = stream(server.url, channels=["user:1"], params={"token": granted})
    server.say("for you", channel="user:1")
    assert [e.data for e in client.take(1)] == ["for you"]
    with pytest.raises(StopIteration):
        client.take(1)
    closed_after = time.monotonic() - opened
    assert lifetime - 0.5 < closed_after < lifetime + 1.0, closed_after
    refused = server.get("/events", params={"channel": "user:1", "token": granted})
    assert refused.status_code == 403 and "expired" in refused.json()["error"]
    assert server.get("/events", params={"channel": "user:2", "token": granted}).status_code == 403
