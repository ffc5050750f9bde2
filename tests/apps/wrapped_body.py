"""The demo app behind a WSGI middleware that wraps every response body, as one that
counts or rewrites bytes does. ``GET /passed`` answers ``{"bytes": n}``: the body bytes of
``/events`` responses that went through the middleware."""

from __future__ import annotations

import typing as t

from flask import Flask

from sse_flask.demo import create_app as create_demo

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def create_app() -> Flask:
    app = create_demo()
    passed = {"bytes": 0}

    def counting(inner: WSGIApplication) -> WSGIApplication:
        def application(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> t.Iterator[bytes]:
            body = inner(environ, start_response)
            try:
                for chunk in body:
                    if environ["PATH_INFO"] == "/events":
                        passed["bytes"] += len(chunk)
                    yield chunk
            finally:
                getattr(body, "close", lambda: None)()

        return application

    app.get("/passed")(lambda: dict(passed))
    app.wsgi_app = counting(app.wsgi_app)  # type: ignore[method-assign,assignment]
    return app
