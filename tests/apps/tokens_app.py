"""An app with private per-user channels: ``/token?user=N`` mints a subscribe token for
``user:N`` (a real app would take the user from its session)."""

from __future__ import annotations

from flask import Flask, request

from sse_flask import SSE

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "tests-only secret"
    sse.init_app(app)

    @app.get("/token")
    def token() -> dict[str, str]:
        seconds = float(request.args.get("seconds", "3600"))
        return {"token": sse.subscribe_token(f"user:{request.args['user']}", expires_in=seconds)}

    return app
