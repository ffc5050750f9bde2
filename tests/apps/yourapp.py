"""The app a newcomer writes from README: a factory with ``sse.init_app``, alone in a
directory of its own (the tests copy it there), served as ``yourapp:create_app``.

Publishing is opened explicitly (``SSE_OPEN_PUBLISH``), so that ``/say`` answers without a
token whether or not it is closed by default.
"""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_OPEN_PUBLISH"] = True
    sse.init_app(app)
    return app
