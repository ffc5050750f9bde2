"""A module-level Flask app (not a factory), served as ``apps.cli_instance:app``."""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE

app = Flask(__name__)
SSE(app)


@app.get("/")
def index() -> str:
    return "instance app"
