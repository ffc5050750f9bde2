"""An app whose pages use htmx: ``POST /fragments`` renders ``fragment.html`` and publishes
it as a ``row`` event (or the ``event`` it is given) on channel ``rows``, which only a
browser holding the cookie ``member=yes`` may read (so a test sees that the browser sent
its credentials).
``/tests/<path>`` serves ``tests/`` (pages and npm packages) from the stream's own origin."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, render_template, request, send_from_directory

from sse_flask import SSE

sse = SSE()
TESTS = Path(__file__).resolve().parent.parent


def create_app() -> Flask:
    app = Flask(__name__)
    sse.init_app(app)

    @sse.authorizer
    def members_only(channel: str) -> bool:
        return request.cookies.get("member") == "yes"

    @app.post("/fragments")
    def fragment() -> dict[str, str]:
        fields = dict(request.get_json())
        event = fields.pop("event", "row")
        html = render_template("fragment.html", **fields)
        return {"id": sse.publish(html, event=event, channel="rows"), "html": html}

    @app.get("/tests/<path:path>")
    def test_file(path: str) -> Response:
        return send_from_directory(TESTS, path)

    return app
