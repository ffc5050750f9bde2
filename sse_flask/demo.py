"""The demo app: the blueprint mounted at ``/`` and a page that listens to it.

``sse-flask serve`` runs it. The page and its assets come from the ``templates/`` and
``static/`` folders, installed as ``sse_flask.templates`` and ``sse_flask.static`` so that a
non-editable ``pip install .`` still serves them.
"""

from __future__ import annotations

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from .blueprint import http_error
from .extension import SSE
from .resources import resource_dir

__all__ = ["create_app"]


def create_app() -> Flask:
    """Return the demo app; ``SSE_*`` settings come from the environment."""
    app = Flask(__name__, template_folder=resource_dir("templates"), static_folder=resource_dir("static"))
    app.register_error_handler(HTTPException, http_error)
    SSE(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    return app
