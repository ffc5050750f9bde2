"""The demo app with faults to order, for the browser tests of sse-flask.js.

- ``POST /_faults`` with JSON ``{"answers": [[status, retry_after or null], ...]}`` makes the
  next ``/events`` requests answer those errors, in turn, as sse-flask does (JSON
  ``{"error"}``, ``Retry-After`` when given; a ``204`` with no body, as a server that
  wants the client to stop answers).
- ``GET /_faults`` lists each ``/events`` request seen: ``[time, status injected or null, Last-Event-ID]``.
- Channel ``forbidden`` is refused by the authorizer (403).
"""

from __future__ import annotations

import collections
import time
import typing as t

from flask import Flask, Response, jsonify, request

from sse_flask.demo import create_app as create_demo


def create_app() -> Flask:
    app = create_demo()
    answers: collections.deque[tuple[int, str | None]] = collections.deque()
    seen: list[tuple[float, int | None, str | None]] = []
    app.extensions["sse"].sse.authorizer(lambda channel: channel != "forbidden")

    @app.before_request
    def inject() -> Response | None:
        if request.path != "/events":
            return None
        last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
        if not answers:
            seen.append((time.time(), None, last_event_id))
            return None
        status, retry_after = answers.popleft()
        seen.append((time.time(), status, last_event_id))
        if status == 204:
            return Response(status=204)
        response = jsonify(error=f"fault injected by the test: {status}")
        response.status_code = status
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    @app.post("/_faults")
    def order() -> Response:
        body: dict[str, t.Any] = request.get_json()
        answers.extend(
            (int(status), retry_after) for status, retry_after in body.get("answers", [])
        )
        return jsonify(queued=len(answers))

    @app.get("/_faults")
    def requests_seen() -> Response:
        return jsonify(seen)

    return app
