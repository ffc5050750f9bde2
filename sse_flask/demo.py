"""The demo app: the blueprint mounted at ``/`` and a page that listens to it.

``sse-flask serve`` runs it. The page and its assets come from the ``templates/`` and
``static/`` folders, installed as ``sse_flask.templates`` and ``sse_flask.static`` so that a
non-editable ``pip install .`` still serves them.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import typing as t

from flask import Flask, Request, Response, jsonify, render_template, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from .blueprint import http_error
from .errors import BrokerUnavailable, DataTooLarge
from .extension import SSE
from .resources import resource_dir
from .state import check_channel

__all__ = ["create_app"]

#: How long an inbox token lasts, and the longest ``?seconds=`` may ask for. Short, so that
#: the page shows a renewal; a real app picks what revoking access may take at most.
INBOX_TOKEN_SECONDS = 600
#: The fake model's pace: a pause before the first word, then one between words.
THINKING_SECONDS = 0.8
WORD_SECONDS = 0.12
#: The longest question the answer panel takes.
MAX_QUESTION = 500


def fake_answer(question: str) -> list[str]:
    """The words the demo's fake model answers ``question`` with: always the same ones for
    the same question, so that a page can check it got every word once, in order."""
    text = (
        f"You asked: {question} Here is a made-up answer, streamed word by word as a job that "
        "runs apart from your request. Press the drop button while it streams: the page "
        "loses its connection, reconnects with the id of the last word it has, and the server "
        "replays exactly what it missed, so no word is repeated and none is lost. The job "
        "keeps going meanwhile, and its words stay on the server for a while after the end."
    )
    return text.split()


def fake_model(question: str) -> t.Iterator[str]:
    """Stand-in for a language model: thinks a little, then yields ``fake_answer`` word by
    word, with a pause between words."""
    time.sleep(THINKING_SECONDS)
    for word in fake_answer(question):
        yield word
        time.sleep(WORD_SECONDS)


class _CookieSessionsOnDemand(SecureCookieSessionInterface):
    """Flask's cookie sessions, without parsing cookies or building a signer for requests
    that carry no cookie: the demo has SECRET_KEY for subscribe tokens, not for sessions,
    and the two were a fifth of the cost of a publish."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.environ.get("HTTP_COOKIE"):
            return self.session_class()
        return super().open_session(app, request)


def create_app() -> Flask:
    """Return the demo app; ``SSE_*`` settings and ``SECRET_KEY`` come from the environment."""
    app = Flask(
        __name__, template_folder=resource_dir("templates"), static_folder=resource_dir("static")
    )
    # Subscribe tokens are signed with SECRET_KEY. Without one in the environment, each
    # process makes up its own: fine for one worker, but with several (--workers N) a token
    # minted by one worker is refused by the others, so set SECRET_KEY for them to share.
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
    # The demo is for trying /say with curl and the page's form: it opts in to publishes
    # without a token (logged as a warning at start-up; SSE_OPEN_PUBLISH=false undoes it).
    app.config["SSE_OPEN_PUBLISH"] = True
    app.session_interface = _CookieSessionsOnDemand()
    app.register_error_handler(HTTPException, http_error)
    sse = SSE(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.get("/inbox-token")
    def inbox_token() -> Response | tuple[Response, int]:
        """A subscribe token for the private channel ``user:<user>``:
        ``{"channel", "token", "expires_in"}``; 400 with ``{"error"}`` for a bad name.

        A real app takes the user from its session and mints a token for that user only;
        the demo lets anyone pick any name, to show the mechanism. ``?seconds=`` asks for a
        shorter lifetime (at most ``INBOX_TOKEN_SECONDS``), so that renewal can be seen.
        """
        user = request.args.get("user", "")
        channel = f"user:{user}"
        if not user:
            return jsonify(error="give a user name: /inbox-token?user=alice"), 400
        try:
            check_channel(channel)
        except ValueError as e:
            return jsonify(error=f"no inbox for {user!r:.140}: {e}"), 400
        try:
            seconds = float(request.args.get("seconds", INBOX_TOKEN_SECONDS))
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            return jsonify(
                error=f"seconds must be a positive number (at most {INBOX_TOKEN_SECONDS} are granted)"
            ), 400
        seconds = min(seconds, INBOX_TOKEN_SECONDS)
        token = sse.subscribe_token(channel, expires_in=seconds)
        response = jsonify(channel=channel, token=token, expires_in=seconds)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/inbox-say")
    def inbox_say() -> Response | tuple[Response, int]:
        """Publish JSON ``{"user", "data"}`` into the private channel ``user:<user>``;
        answers as ``/say`` does.

        ``/say`` publishes into a private channel only with ``SSE_PUBLISH_TOKEN``, which the
        page does not have: like a real app, the demo publishes from its own view with
        :meth:`SSE.publish` (a real app decides first who may write to whom; the demo lets
        anyone write to any inbox, to show the mechanism). JSON only, so that a page on
        another site cannot post here without the CORS preflight the demo never grants.
        """
        body = request.get_json(silent=True)
        if not (isinstance(body, dict) and isinstance(body.get("user"), str) and "data" in body):
            return jsonify(error='send JSON such as {"user": "alice", "data": "hi"}'), 400
        channel = f"user:{body['user']}"
        try:
            event_id = sse.publish(body["data"], channel=channel)
        except DataTooLarge as e:
            return jsonify(error=str(e)), 413
        except ValueError as e:
            return jsonify(error=str(e)), 400
        except BrokerUnavailable as e:
            return jsonify(error=f"nothing was sent: {e}"), 503
        return jsonify(id=event_id, channel=channel, event="message")

    @app.post("/answer")
    def answer() -> Response | tuple[Response, int]:
        """Start the fake model on ``{"question": ...}`` as a job: ``{"channel", "token"}``.
        The page opens ``/events`` with both; the words arrive as events, then ``done``."""
        question = _question()
        if question is None:
            return _no_question()
        job = sse.start_job(fake_model, question)
        return jsonify(channel=job.channel, token=job.token)

    @app.post("/answer/cancel")
    def cancel_answer() -> Response | tuple[Response, int]:
        """Stop the job of ``{"channel": ...}``: its stream ends with ``cancelled``."""
        body = request.get_json(silent=True)
        channel = body.get("channel") if isinstance(body, dict) else None
        if not isinstance(channel, str):
            return jsonify(error='send JSON {"channel": "job:..."}'), 400
        try:
            sse.cancel_job(channel)
        except ValueError as e:
            return jsonify(error=str(e)), 400
        return jsonify(cancelled=channel)

    @app.route("/answer/stream", methods=["GET", "POST"])
    def answer_stream() -> Response | tuple[Response, int]:
        """The same answer as this request's own stream (``sse.stream``): nothing to resume.
        ``curl -N '.../answer/stream?question=hi'``, or POST JSON as to ``/answer``."""
        question = _question()
        if question is None:
            return _no_question()
        return sse.stream(fake_model(question))

    return app


def _no_question() -> tuple[Response, int]:
    message = f'send JSON {{"question": "..."}} or ?question= with 1 to {MAX_QUESTION} characters'
    return jsonify(error=message), 400


def _question() -> str | None:
    """The question of a JSON body or of ``?question=``; ``None`` if missing or too long."""
    body = request.get_json(silent=True) if request.method == "POST" else None
    question = body.get("question") if isinstance(body, dict) else request.args.get("question")
    if not isinstance(question, str) or not 0 < len(question.strip()) <= MAX_QUESTION:
        return None
    return question.strip()
