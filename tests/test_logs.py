"""Subscribe tokens stay out of logs: :mod:`sse_flask.logs` redacts ``?token=`` from a line,
from every record of a logger, and from gunicorn's access log; and no line sse-flask writes
itself holds one.
"""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

from sse_flask import SSE
from sse_flask.logs import RedactTokens, redact

SECRET = "eyJjIjpbInVzZXI6MSJdfQ.secret-part"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"GET /events?token={SECRET} HTTP/1.1", "GET /events?token=[redacted] HTTP/1.1"),
        (
            f"/events?channel=user:1&token={SECRET}&lastEventId=3",
            "/events?channel=user:1&token=[redacted]&lastEventId=3",
        ),
        (
            f'"GET /a?token={SECRET}" 200 "http://x/?token={SECRET}"',
            '"GET /a?token=[redacted]" 200 "http://x/?token=[redacted]"',
        ),
        ("GET /events?token= HTTP/1.1", "GET /events?token=[redacted] HTTP/1.1"),
        ("GET /events?channel=news HTTP/1.1", "GET /events?channel=news HTTP/1.1"),
        ("GET /events?tokens=mine&mytoken=mine", "GET /events?tokens=mine&mytoken=mine"),
        ("a token=not-in-a-url", "a token=not-in-a-url"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("%(r)s %(s)s", {"r": f"GET /events?token={SECRET} HTTP/1.1", "s": "200"}),
        ("request %s failed", (f"/events?token={SECRET}",)),
        (f"request /events?token={SECRET} failed", None),
    ],
)
def test_filter_redacts_each_record(
    caplog: pytest.LogCaptureFixture, message: str, args: t.Any
) -> None:
    """The filter formats the record first, so a token in any argument is caught, as gunicorn
    passes its access-log atoms as one mapping."""
    logger = logging.getLogger("tests.redacted")
    logger.addFilter(RedactTokens())
    with caplog.at_level(logging.INFO, logger="tests.redacted"):
        logger.info(message, args) if args is not None else logger.info(message)
    assert SECRET not in caplog.text and "token=[redacted]" in caplog.text


def test_unexpected_error_log_has_no_token(caplog: pytest.LogCaptureFixture) -> None:
    """The one line the blueprint logs about a request (an unexpected error) names its path,
    not its query string."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test secret"
    sse = SSE(app)

    @sse.authorizer
    def broken(channel: str) -> bool:
        raise RuntimeError("the authorizer failed")

    with app.app_context():
        token = sse.subscribe_token("user:1")
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get(f"/events?channel=user:1&token={token}")
    assert response.status_code == 500
    assert "unexpected error in GET /events" in caplog.text
    assert token not in caplog.text


def test_serve_writes_no_token(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient]
) -> None:
    """``sse-flask serve``'s log, its own lines and gunicorn's, holds no token after a
    stream opened with one has run and closed, and after a refused one."""
    server = serve(app="apps.tokens_app:create_app", env={"SSE_HEARTBEAT": "0.2"})
    token = server.get("/token", params={"user": "1"}).json()["token"]
    client = stream(server.url, channels=["user:1"], params={"token": token})
    assert client.response.status_code == 200
    client.close()
    assert (
        server.get("/events", params={"channel": "user:1", "token": token + "x"}).status_code == 403
    )
    wait_until(lambda: "stream closed" in server.log(), 10, "the stream's close line")
    assert token not in server.log()


def test_gunicorn_access_log(launch: t.Callable[..., Server]) -> None:
    """gunicorn's access log holds the token unless its logger class is sse-flask's."""
    requested: dict[str, str] = {}

    def visit(server: Server) -> str:
        requested["token"] = token = server.get("/token", params={"user": "1"}).json()["token"]
        assert (
            server.get("/events", params={"channel": "user:2", "token": token}).status_code == 403
        )
        wait_until(lambda: "/events?" in server.log(), 10, "the access log line")
        return server.log()

    plain = visit(launch("gevent", "apps.tokens_app:create_app", "--access-logfile", "-"))
    assert requested["token"] in plain, (
        "the access log shows query strings, so the redaction is needed"
    )
    logger_class = ["--logger-class", "sse_flask.logs.GunicornLogger"]
    redacted = visit(
        launch("gevent", "apps.tokens_app:create_app", "--access-logfile", "-", *logger_class)
    )
    assert requested["token"] not in redacted
    assert "GET /events?channel=user%3A2&token=[redacted] HTTP/1.1" in redacted
