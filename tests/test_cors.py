"""``SSE_CORS_ORIGINS``: the origins whose pages may open streams and publish (flask-cors)."""

from __future__ import annotations

import pytest
from flask import Flask

from sse_flask import SSE


@pytest.fixture
def client() -> object:
    app = Flask(__name__)
    app.config.update(SSE_CORS_ORIGINS="https://allowed.example, https://other.example", SSE_URL_PREFIX="/sse")
    SSE(app)

    @app.get("/mine")
    def mine() -> str:
        return "not ours"

    return app.test_client()


def test_allowed_origin_may_open_a_stream(client: object) -> None:
    response = client.get("/sse/events", headers={"Origin": "https://allowed.example"}, buffered=False)  # type: ignore[attr-defined]
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
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_the_apps_own_routes_are_left_alone(client: object) -> None:
    response = client.get("/mine", headers={"Origin": "https://allowed.example"})  # type: ignore[attr-defined]
    assert "Access-Control-Allow-Origin" not in response.headers


def test_without_the_setting_no_cors_headers() -> None:
    app = Flask(__name__)
    SSE(app)
    response = app.test_client().post("/say", json={"data": "x"}, headers={"Origin": "https://allowed.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
