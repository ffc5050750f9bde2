"""An app whose own ``app.config`` holds a bad setting: ``serve`` must refuse it before it
binds, naming the key and ``app.config``."""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_RETRY_MS"] = "soon"
    SSE(app)
    return app
