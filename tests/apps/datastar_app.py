"""A Datastar counter: ``POST /count`` publishes the new count to channel ``counter`` as a
signal patch and an element patch; ``GET /count/stream`` is a view stream that reads the
page's signals (``?datastar=``) and answers with the next count.

For the browser test: ``POST /items`` publishes a rendered ``item.html`` (several lines) to
channel ``items``, appended to ``#items``; ``GET /greet`` is an ``sse.stream`` that answers
the page's signal ``name`` with a signal patch and an element patch; ``/tests/<path>``
serves ``tests/`` (the pages) from the stream's own origin."""

from __future__ import annotations

import itertools
from pathlib import Path

from flask import Flask, Response, render_template, request, send_from_directory
from markupsafe import escape

from sse_flask import SSE, datastar, encode_event

sse = SSE()
TESTS = Path(__file__).resolve().parent.parent


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

    @app.post("/items")
    def item() -> dict[str, str]:
        html = render_template("item.html", **request.get_json())
        event = datastar.patch_elements(html, selector="#items", mode="append")
        return {"id": datastar.publish(sse, event, channel="items"), "html": html}

    @app.get("/greet")
    def greet() -> Response:
        name = str((datastar.read_signals() or {}).get("name", "nobody"))
        return sse.stream(
            [
                datastar.patch_signals({"greeting": f"hello, {name}"}),
                datastar.patch_elements(f'<p id="greeted">{escape(name)} was here</p>'),
            ]
        )

    @app.get("/tests/<path:path>")
    def test_file(path: str) -> Response:
        return send_from_directory(TESTS, path)

    return app
