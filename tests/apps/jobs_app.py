"""An app that starts jobs, for the live tests of ``sse.start_job``; every answer says which
worker process gave it (``X-Worker``), so that tests can tell workers apart. Its authorizer
lets every channel through, which must not open a job's channel without the job's token.

- ``POST /jobs`` with JSON ``{"name": ..., "parts": N, "pause": S, "fail": bool}``: a job
  yielding ``part 1`` ... ``part N``, S seconds apart (raising after them if ``fail``);
  answers ``{"channel", "token"}``. Its generator's ``finally`` writes ``finally <name>`` to
  the file named by ``$JOBS_LOG``, and the job's app context teardown ``torn down <name>``.
- ``POST /jobs/cancel`` with JSON ``{"channel": ...}``: ``sse.cancel_job(channel)``.
- ``GET /token?channel=C``: a subscribe token for any channel C (a test of unknown jobs).
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask, Response, g, request

from sse_flask import SSE

sse = SSE()


def _note(line: str) -> None:
    with open(os.environ["JOBS_LOG"], "a") as log:
        log.write(line + "\n")


def parts(name: str, count: int, pause: float, fail: bool) -> t.Iterator[str]:
    g.job = name
    try:
        for number in range(1, count + 1):
            yield f"part {number}"
            time.sleep(pause)
        if fail:
            raise RuntimeError("a secret detail of the job")
    finally:
        _note(f"finally {g.job}")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "tests-only secret"
    sse.init_app(app)
    # Every channel is open to everyone, but a job's still needs its token.
    sse.authorizer(lambda channel: True)

    @app.after_request
    def worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.teardown_appcontext
    def torn_down(error: BaseException | None) -> None:
        if "job" in g:
            _note(f"torn down {g.pop('job')}")

    @app.post("/jobs")
    def start() -> dict[str, t.Any]:
        body = request.get_json()
        job = sse.start_job(
            parts,
            body["name"],
            int(body["parts"]),
            float(body.get("pause", 0)),
            bool(body.get("fail")),
        )
        return {"channel": job.channel, "token": job.token}

    @app.post("/jobs/cancel")
    def cancel() -> tuple[str, int]:
        sse.cancel_job(request.get_json()["channel"])
        return "", 204

    @app.get("/token")
    def token() -> str:
        return sse.subscribe_token(request.args["channel"])

    return app
