"""A user's own app with the blueprint mounted under ``/sse`` and a page of its own at ``/``."""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_URL_PREFIX"] = "/sse"
    SSE(app)

    @app.get("/")
    def index() -> str:
        return "custom app"

    return app
