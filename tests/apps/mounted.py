"""A user's app that only mounts the blueprint, with every setting at its default, served
by plain gunicorn as ``apps.mounted:create_app()``."""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)
    sse.init_app(app)
    return app
