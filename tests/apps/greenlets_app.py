"""The demo app with ``GET /greenlets``, answering ``{"greenlets": n}``: the greenlets alive
in the worker (the hub's, the ticker's, this request's, and any that a stream keeps)."""

from __future__ import annotations

import gc

import greenlet  # type: ignore[import-untyped]
from flask import Flask

from sse_flask.demo import create_app as create_demo


def create_app() -> Flask:
    app = create_demo()

    @app.get("/greenlets")
    def greenlets() -> dict[str, int]:
        alive = [o for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead]
        return {"greenlets": len(alive)}

    return app
