"""``SSE_CORS_ORIGINS``: the origins whose pages may open streams and publish (flask-cors)."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask, Response
from flask_cors import cross_origin

from sse_flask import SSE, Event, encode_event
from sse_flask.blueprint import cors_options


@pytest.fixture
def client() -> object:
    app = Flask(__name__)
    app.config.update(
        SSE_CORS_ORIGINS="https://allowed.example, https://other.example", SSE_URL_PREFIX="/sse"
    )
    SSE(app)

    @app.get("/mine")
    def mine() -> str:
        return "not ours"

    return app.test_client()


def test_allowed_origin_may_open_a_stream(client: object) -> None:
    response = client.get(  # type: ignore[attr-defined]
        "/sse/events", headers={"Origin": "https://allowed.example"}, buffered=False
    )
    try:
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://allowed.example"
    finally:
        response.close()


def test_other_origins_get_no_grant(client: object) -> None:
    response = client.get("/sse/events", headers={"Origin": "https://evil.example"}, buffered=False)  # type: ignore[attr-defined]
    try:
        assert "Access-Control-Allow-Origin" not in response.headers
    finally:
        response.close()


def test_preflight_for_a_json_publish_with_a_token(client: object) -> None:
    response = client.options(  # type: ignore[attr-defined]
        "/sse/say",
        headers={
            "Origin": "https://other.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://other.example"
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_the_apps_own_routes_are_left_alone(client: object) -> None:
    response = client.get("/mine", headers={"Origin": "https://allowed.example"})  # type: ignore[attr-defined]
    assert "Access-Control-Allow-Origin" not in response.headers


def test_without_the_setting_no_cors_headers() -> None:
    app = Flask(__name__)
    SSE(app)
    response = app.test_client().post(
        "/say", json={"data": "x"}, headers={"Origin": "https://allowed.example"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def _cors_headers(response: t.Any) -> dict[str, str]:
    return {
        k.lower(): v
        for k, v in response.headers.items()
        if k.startswith(("Access-Control", "Vary"))
    }


def test_listed_origins_may_send_credentials_and_answers_vary(client: object) -> None:
    """htmx-ext-sse opens EventSource withCredentials: the grant must say credentials are fine,
    and Vary: Origin keeps a cache from serving one origin's grant to another."""
    for path in ("/sse/events", "/sse/stats"):
        origin = {"Origin": "https://allowed.example"}
        response = client.get(path, headers=origin, buffered=False)  # type: ignore[attr-defined]
        try:
            headers = _cors_headers(response)
        finally:
            response.close()
        assert headers["access-control-allow-origin"] == "https://allowed.example", path
        assert headers["access-control-allow-credentials"] == "true", path
        assert "origin" in headers["vary"].lower(), path


def test_one_listed_origin_still_varies() -> None:
    """flask-cors leaves Vary out for one literal origin; the grant still depends on Origin."""
    app = Flask(__name__)
    app.config.update(SSE_CORS_ORIGINS="http://localhost:5000")
    SSE(app)
    headers = _cors_headers(
        app.test_client().get("/stats", headers={"Origin": "http://localhost:5000"})
    )
    assert headers["vary"] == "Origin"
    assert headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("path", ["/sse/events", "/sse/say"])
def test_preflight_allows_last_event_id_and_credentials(client: object, path: str) -> None:
    """A stream resumed with the Last-Event-ID header from another origin needs a preflight."""
    response = client.options(  # type: ignore[attr-defined]
        path,
        headers={
            "Origin": "https://allowed.example",
            "Access-Control-Request-Method": "GET" if path.endswith("events") else "POST",
            "Access-Control-Request-Headers": "last-event-id, content-type",
        },
    )
    headers = _cors_headers(response)
    assert response.status_code == 200
    assert {"last-event-id", "content-type"} <= {
        h.strip().lower() for h in headers["access-control-allow-headers"].split(",")
    }
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-allow-origin"] == "https://allowed.example"


def test_a_wildcard_never_grants_credentials() -> None:
    """``*`` lets any page read the streams, but never with the user's cookies."""
    app = Flask(__name__)
    app.config.update(SSE_CORS_ORIGINS="*")
    SSE(app)
    headers = _cors_headers(
        app.test_client().get("/stats", headers={"Origin": "https://any.example"})
    )
    assert headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in headers


def test_an_app_view_gets_the_same_answers_through_cors_options() -> None:
    """The documented way for an app's own streaming view: flask-cors's cross_origin with
    the blueprint's options, preflight included."""
    app = Flask(__name__)
    app.config.update(SSE_CORS_ORIGINS="https://allowed.example")
    SSE(app)

    @app.route("/ask", methods=["GET", "POST"])
    @cross_origin(**cors_options(["https://allowed.example"]))
    def ask() -> Response:
        return Response([encode_event(Event(data="one", id="1"))], content_type="text/event-stream")

    client = app.test_client()
    preflight = client.options(
        "/ask",
        headers={
            "Origin": "https://allowed.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert _cors_headers(preflight)["access-control-allow-credentials"] == "true"
    response = client.post("/ask", headers={"Origin": "https://allowed.example"})
    headers = _cors_headers(response)
    assert (
        headers["access-control-allow-origin"],
        headers["access-control-allow-credentials"],
        headers["vary"],
    ) == ("https://allowed.example", "true", "Origin")
    assert "access-control-allow-origin" not in _cors_headers(
        client.post("/ask", headers={"Origin": "https://evil.example"})
    )
