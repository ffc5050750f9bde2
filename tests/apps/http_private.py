"""An app that mounts the blueprint and refuses channels starting with ``secret``."""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE


def create_app() -> Flask:
    app = Flask(__name__)
    sse = SSE(app)

    @sse.authorizer
    def may_listen(channel: str) -> bool:
        return not channel.startswith("secret")

    return app
