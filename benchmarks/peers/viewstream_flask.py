"""The sse-flask row of benchmarks/viewstream.py: ``sse.stream`` views under ``sse-flask serve``.

- ``GET /items?n=N``: N items as fast as the generator goes, each its send time (``time.time()``).
- ``GET /hold?id=K``: one item, then nothing until the client leaves; the generator's
  ``finally`` records when it was closed, which ``GET /closed`` lists as ``{K: time}``.
"""

from __future__ import annotations

import time
import typing as t

from flask import Flask, request

from sse_flask import SSE

CLOSED: dict[str, float] = {}


def create_app() -> Flask:
    app = Flask(__name__)
    sse = SSE(app)

    @app.get("/items")
    def items() -> t.Any:
        count = int(request.args.get("n", "100"))
        return sse.stream(str(time.time()) for _ in range(count))

    @app.get("/hold")
    def hold() -> t.Any:
        key = request.args["id"]

        def held() -> t.Iterator[str]:
            try:
                yield str(time.time())
                time.sleep(3600)
            finally:
                CLOSED[key] = time.time()

        return sse.stream(held())

    @app.get("/closed")
    def closed() -> dict[str, float]:
        return CLOSED

    return app
