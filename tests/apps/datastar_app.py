"""A Datastar counter: ``POST /count`` publishes the new count to channel ``counter`` as a
signal patch and an element patch; ``GET /count/stream`` is a view stream that reads the
page's signals (``?datastar=``) and answers with the next count."""

from __future__ import annotations

import itertools

from flask import Flask, Response

from sse_flask import SSE, datastar, encode_event

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)
    sse.init_app(app)
    counts = itertools.count(1)

    @app.post("/count")
    def count() -> dict[str, str]:
        n = next(counts)
        return {
            "signals": datastar.publish(
                sse, datastar.patch_signals({"count": n}), channel="counter"
            ),
            "elements": datastar.publish(
                sse,
                datastar.patch_elements(f"<span>{n}</span>", selector="#count", mode="inner"),
                channel="counter",
            ),
        }

    @app.get("/count/stream")
    def stream() -> Response:
        signals = datastar.read_signals() or {}
        n = int(signals.get("count", 0)) + 1
        events = [
            datastar.patch_signals({"count": n}, id="1"),
            datastar.patch_elements(f'<b id="count">{n}</b>', id="2"),
        ]
        return Response(map(encode_event, events), content_type="text/event-stream; charset=utf-8")

    return app
