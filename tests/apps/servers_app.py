"""An app as it runs before sse-flask comes in: one view of its own, plus ``sse.init_app``.

The view publishes as an app's own views do, with ``sse.publish``, so that the tests need
no ``/say`` (and no publish token); it answers the event's id, or 503 when nothing was sent
(the in-process broker of a stopping worker refuses publishes).
"""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE, BrokerUnavailable

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/orders/<int:order>/ship")
    def ship(order: int) -> tuple[dict[str, str], int]:
        try:
            return {"id": sse.publish({"order": order}, event="shipped")}, 200
        except BrokerUnavailable as e:
            return {"error": str(e)}, 503

    sse.init_app(app)
    return app
