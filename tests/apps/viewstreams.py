"""Views that answer with ``sse.stream(...)``, and a teardown that releases what the items
took, for the live tests of view streams.

Each line the app writes to the file named by ``$VIEWSTREAM_LOG`` is one happening:
``acquired <n>`` when a stream's items start and take resource n, ``finally <n>`` when their
generator's ``finally`` runs, ``released <n>`` when the request's ``teardown_appcontext``
gives it back, ``teardown_request <n>`` when ``teardown_request`` sees it.

- ``GET|POST /slow?delay=S``: sleeps S seconds, then yields ``"one"``, ``{"n": 2}`` and an
  ``Event`` of type ``custom`` with id ``own``; ``POST`` takes ``{"words": [...]}`` instead.
- ``GET /forever?pause=S``: a resource taken, then an item every S seconds (0.1 unless
  given), never ending.
- ``GET /fails``: one item, then an exception whose message must not reach the client.
- ``GET /context?q=...``: items read from ``request`` and ``current_app`` inside the stream.
"""

from __future__ import annotations

import itertools
import os
import time
import typing as t

from flask import Flask, current_app, g, request

from sse_flask import SSE, Event

_resources = itertools.count(1)


def _note(line: str) -> None:
    with open(os.environ["VIEWSTREAM_LOG"], "a") as log:
        log.write(line + "\n")


def create_app() -> Flask:
    app = Flask(__name__)
    sse = SSE(app)

    @app.teardown_request
    def seen(error: BaseException | None) -> None:
        if "resource" in g:
            _note(f"teardown_request {g.resource}")

    @app.teardown_appcontext
    def release(error: BaseException | None) -> None:
        resource = g.pop("resource", None)
        if resource is not None:
            _note(f"released {resource}")

    @app.route("/slow", methods=["GET", "POST"])
    def slow() -> t.Any:
        delay = float(request.args.get("delay", "0"))
        words = request.get_json()["words"] if request.method == "POST" else None

        def items() -> t.Iterator[t.Any]:
            time.sleep(delay)
            if words is not None:
                yield from words
                return
            yield "one"
            yield {"n": 2}
            yield Event(data="three", event="custom", id="own")

        return sse.stream(items())

    @app.get("/forever")
    def forever() -> t.Any:
        pause = float(request.args.get("pause", "0.1"))

        def items() -> t.Iterator[int]:
            g.resource = next(_resources)
            _note(f"acquired {g.resource}")
            try:
                for number in itertools.count():
                    yield number
                    time.sleep(pause)
            finally:
                _note(f"finally {g.resource}")

        return sse.stream(items())

    @app.get("/fails")
    def fails() -> t.Any:
        def items() -> t.Iterator[str]:
            yield "before"
            raise RuntimeError("a secret detail of the server")

        return sse.stream(items())

    @app.get("/context")
    def context() -> t.Any:
        def items() -> t.Iterator[str]:
            yield request.args["q"]
            yield current_app.name

        return sse.stream(items())

    return app
