"""The HTTP layer: the ``sse`` blueprint's routes, and every error as JSON.

Routes are relative to ``SSE_URL_PREFIX``: ``/events``, ``/say``, ``/stats``, ``/healthz``.
Each error answers ``{"error": "..."}`` with the contract's status and no traceback.
"""

from __future__ import annotations

import functools
import hmac
import itertools
import json
import logging
import re
import time
import typing as t

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from .errors import (
    BrokerUnavailable,
    DataTooLarge,
    InvalidInput,
    InvalidToken,
    NotReplicated,
    UnknownJob,
)
from .events import DEFAULT_EVENT
from .jobs import subscribe
from .metrics import exposition, metrics
from .resources import resource_dir
from .state import DEFAULT_CHANNEL, AppState, check_channel
from .stream import EventStream, stream_response

if t.TYPE_CHECKING:
    from .config import Settings

__all__ = ["blueprint"]

log = logging.getLogger("sse_flask")

blueprint = Blueprint("sse", __name__)

_hellos = itertools.count(1)


@blueprint.get("/events")
def events() -> Response:
    """The event stream of the channels named by ``?channel=`` (``default`` if none)."""
    state = _state()
    settings = state.settings
    channels = list(
        dict.fromkeys(check_channel(name) for name in request.args.getlist("channel"))
    ) or [DEFAULT_CHANNEL]
    try:
        grant = state.read_token(request.args.get("token"))
    except InvalidToken as e:
        return _error(403, str(e))
    for channel in channels:
        refusal = state.refusal(channel, grant)
        if refusal is not None:
            return _error(403, refusal)
    # A stream with private channels ends when its token expires.
    expires_in = (
        grant.expires_at - time.time() if grant and any(map(state.is_private, channels)) else None
    )
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or None
    address = request.remote_addr or ""
    refusal = state.reserve_stream(address, request.environ)
    if refusal is not None:
        return _error(503, refusal, {"Retry-After": str(max(1, settings.retry_ms // 1000))})
    compress = settings.compress and request.accept_encodings["gzip"] > 0
    release = functools.partial(state.release_stream, address)
    try:
        subscription = subscribe(
            state.broker, channels, last_event_id, queue_size=settings.queue_size
        )
    except BrokerUnavailable as e:
        # Its history unreadable: nothing is lost by asking again.
        release()
        return _error(
            503, f"the stream could not open, try again in a moment: {e}", {"Retry-After": "1"}
        )
    except BaseException:
        release()
        raise
    if last_event_id is not None:
        figures = metrics()
        figures.replays.inc()
        if subscription.missed:
            figures.missed.inc()
    stream = EventStream(
        subscription,
        heartbeat=settings.heartbeat,
        retry_ms=settings.retry_ms,
        lifetime=settings.max_stream_seconds,
        expires_in=expires_in,
        compress=compress,
        environ=request.environ,
        on_close=release,
    )
    return stream_response(stream, negotiated=settings.compress)


@blueprint.route("/say", methods=["GET", "POST"])
def say() -> Response:
    """Publish one event: from the query string on GET, from JSON or form fields on POST."""
    state = _state()
    settings = state.settings
    if settings.publish_token is None and not settings.open_publish:
        return _error(
            403,
            "publishing over HTTP is off: set SSE_PUBLISH_TOKEN to require a bearer token, or "
            "SSE_OPEN_PUBLISH=true to let anyone who can reach /say publish",
        )
    if not _token_ok(settings.publish_token):
        return _error(
            401,
            "publishing needs the header 'Authorization: Bearer <SSE_PUBLISH_TOKEN>'; it is missing or wrong",
            {"WWW-Authenticate": 'Bearer realm="sse-flask"'},
        )
    refusal = _cross_site_refusal(settings)
    if refusal is not None:
        return _error(403, refusal)
    if request.method == "GET":
        data = request.args.get("msg", request.args.get("data"))
        if data is None:
            data = f"hello {next(_hellos)}"
        event, channel = request.args.get("event"), request.args.get("channel")
    else:
        data, event, channel = _posted_fields(settings)
    if settings.publish_token is None and state.is_private(channel or DEFAULT_CHANNEL):
        return _error(
            403,
            f"channel {channel!r:.140} is private: publishing to it over HTTP needs "
            "SSE_PUBLISH_TOKEN set and sent as 'Authorization: Bearer <token>', "
            "even with SSE_OPEN_PUBLISH",
        )
    event_id = state.publish(data, event, channel)
    return jsonify(id=event_id, channel=channel or DEFAULT_CHANNEL, event=event or DEFAULT_EVENT)


@blueprint.get("/stats")
def stats() -> Response:
    """This process's figures: open streams (views' own too, :meth:`SSE.stream`), per
    channel, published, dropped, backend."""
    state = _state()
    figures = state.broker.stats()
    figures["consumers"] += len(state.views)
    return jsonify(figures)


@blueprint.get("/healthz")
def healthz() -> Response | tuple[Response, int]:
    """``200 {"status": "ok"}``, or ``503`` with the reason when the broker is unreachable."""
    try:
        _state().broker.ping()
    except BrokerUnavailable as e:
        return jsonify(status="unavailable", error=str(e)), 503
    return jsonify(status="ok")


@blueprint.get("/metrics")
def metrics_text() -> Response:
    """Prometheus text exposition: open streams, events published, frames and bytes sent,
    slow consumers dropped, replays, ``missed`` sent, publish and fan-out latencies;
    summed over every worker of the server."""
    body, content_type = exposition()
    return Response(body, content_type=content_type)


@blueprint.get("/sse-flask.js")
def script() -> Response:
    """The browser helper, ``static/sse-flask.js``, served beside the stream it talks to."""
    return send_from_directory(resource_dir("static"), "sse-flask.js", mimetype="text/javascript")


@blueprint.errorhandler(DataTooLarge)
def _too_large(e: DataTooLarge) -> Response:
    return _error(413, str(e))


@blueprint.errorhandler(ValueError)
def _invalid(e: ValueError) -> Response:
    # InvalidInput from the extension, and ValueError from the encoder (event types).
    return _error(400, str(e))


@blueprint.errorhandler(UnknownJob)
def _unknown_job(e: UnknownJob) -> Response:
    return _error(404, str(e))


@blueprint.errorhandler(BrokerUnavailable)
def _unavailable(e: BrokerUnavailable) -> Response:
    if isinstance(e, NotReplicated):
        # With the event's id: the publisher can tell that it was written, and not send it again.
        return _error(503, str(e), {"Retry-After": "1"}, id=e.event_id)
    return _error(503, f"nothing was sent: {e}", {"Retry-After": "1"})


@blueprint.errorhandler(HTTPException)
def _http_error(e: HTTPException) -> Response:
    return http_error(e)


@blueprint.errorhandler(Exception)
def _internal(e: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.path)
    return _error(500, "internal server error; the details are in the server's log")


def http_error(e: HTTPException) -> Response:
    """Answer a werkzeug HTTP error as JSON; the demo app uses it for all its routes."""
    response = _error(e.code or 500, e.description or e.name)
    if isinstance(e, MethodNotAllowed) and e.valid_methods:
        response.headers["Allow"] = ", ".join(e.valid_methods)
    return response


def json_method_not_allowed(e: MethodNotAllowed) -> Response | MethodNotAllowed:
    """An app-wide 405 handler: JSON on the blueprint's routes, the app's usual answer elsewhere.

    Flask does not pass routing errors to a blueprint's own handlers, so ``init_app``
    registers this one on the app, unless the app handles 405 itself.
    """
    routes = {
        rule.rule for rule in current_app.url_map.iter_rules() if rule.endpoint.startswith("sse.")
    }
    return http_error(e) if request.path in routes else e


def warn_open_publish(app: Flask, settings: Settings) -> None:
    """Log, whatever server runs the app, that ``SSE_OPEN_PUBLISH`` lets anyone publish."""
    if settings.open_publish and settings.publish_token is None:
        app.logger.warning(
            "SSE_OPEN_PUBLISH is on: %s/say publishes from anyone who can reach this app; "
            "set SSE_PUBLISH_TOKEN to require a token",
            settings.url_prefix,
        )


def cors_options(origins: t.Sequence[str]) -> dict[str, t.Any]:
    """The flask-cors options for ``origins``, as the blueprint's routes use them.

    Listed origins may send credentials (cookies): htmx's SSE extension always opens its
    ``EventSource`` with ``withCredentials``, which a browser refuses without
    ``Access-Control-Allow-Credentials: true``. A ``*`` among them allows any origin
    without credentials, since granting them to every site would let any page act as the
    user. ``Last-Event-ID`` is allowed as a request header, for clients that resume with it.

    An app view that streams (:meth:`SSE.stream`) gets the same answers, preflight
    included, with ``@flask_cors.cross_origin(**cors_options(origins))`` under its route.
    """
    wildcard = "*" in origins
    # As patterns, which flask-cors answers with "Vary: Origin" even for a single origin,
    # whereas for one literal origin it leaves Vary out and lets a cache serve the grant
    # of one origin to another.
    exact = [re.compile(re.escape(origin) + r"\Z", re.IGNORECASE) for origin in origins]
    return {
        "origins": "*" if wildcard else exact,
        "send_wildcard": wildcard,
        "supports_credentials": not wildcard,
        "methods": ["GET", "HEAD", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type", "Last-Event-ID"],
        "vary_header": True,
    }


def enable_cors(app: Flask, settings: Settings) -> None:
    """Let the browsers of ``SSE_CORS_ORIGINS`` open streams and publish, on every route
    of the blueprint (registered on ``app`` already) and no other."""
    from flask_cors import CORS

    rules = app.url_map.iter_rules()
    routes = sorted({rule.rule for rule in rules if rule.endpoint.startswith("sse.")})
    pattern = "^(" + "|".join(map(re.escape, routes)) + ")$"
    CORS(app, resources={pattern: cors_options(settings.cors_origins)})


def _state() -> AppState:
    return t.cast(AppState, current_app.extensions["sse"])


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, **fields: t.Any
) -> Response:
    response = jsonify(error=message, **fields)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _token_ok(token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes as long whatever the first wrong character, so the token
    # cannot be guessed one character at a time from response times.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1", "replace"), token.encode()
    )


def _cross_site_refusal(settings: Settings) -> str | None:
    """Why a browser request from another site may not publish, or ``None`` if it may.

    A page on any site can make its visitors' browsers send a form ``POST`` or a ``GET``
    without asking first (no CORS preflight), so only requests that the browser marks as
    same-origin (``Sec-Fetch-Site``, else ``Origin``), or that come from an origin listed
    in ``SSE_CORS_ORIGINS`` with a JSON body (which browsers send only after a preflight),
    publish. A client that is not a browser sends neither header and is not concerned.
    """
    # An empty Origin is no browser's: treated as none.
    origin = request.headers.get("Origin") or None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site in ("same-origin", "none"):
            return None
    elif origin is None or origin == f"{request.scheme}://{request.host}":
        return None
    allowed = settings.cors_origins
    if origin is None or (origin not in allowed and "*" not in allowed):
        return (
            f"a page from another site ({origin or 'no Origin header'}) may not publish: "
            "list its origin in SSE_CORS_ORIGINS to allow it"
        )
    if request.method == "POST" and not request.is_json:
        return (
            f"a publish from another origin ({origin}) must send a JSON body "
            "(Content-Type: application/json)"
        )
    return None


def _posted_fields(settings: Settings) -> tuple[t.Any, str | None, str | None]:
    """``data``, ``event`` and ``channel`` from a JSON object or form fields."""
    # Room for JSON escapes and white space around the largest data allowed.
    limit = request.max_content_length = request.max_form_memory_size = (
        8 * settings.max_data_bytes + 65536
    )
    too_large = DataTooLarge(
        f"the request body is over {limit} bytes, the most /say reads for data of up to "
        f"{settings.max_data_bytes} bytes (SSE_MAX_DATA_BYTES)"
    )
    try:
        body = request.get_data(cache=True)
        # A JSON body is not parsed as a form too; form is None for it.
        form = None if request.is_json else request.form
    except RequestEntityTooLarge:
        raise too_large from None
    except HTTPException:
        raise
    except Exception as e:
        # The server failed to read the body (gunicorn: a malformed chunk); the request is at fault.
        raise InvalidInput(f"the request body could not be read: {e}") from None
    if len(body) >= limit:
        # A chunked body has no length to refuse up front; werkzeug stops reading it at the limit.
        raise too_large
    if form is None:
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise InvalidInput(f"the body is not valid JSON: {e}") from None
        if not isinstance(fields, dict):
            raise InvalidInput(
                'the JSON body must be an object such as {"data": "hi", "event": "greeting", "channel": "news"}'
            )
        if "data" not in fields:
            raise InvalidInput("the JSON body has no field 'data'")
        data = fields["data"]
    else:
        fields = form
        data = fields.get("data", fields.get("msg"))
        if data is None:
            raise InvalidInput(
                "send the field 'data' as JSON (Content-Type: application/json) or as a form field"
            )
    for name in ("event", "channel"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise InvalidInput(f"field {name!r} must be a string, got {fields[name]!r:.80}")
    return data, fields.get("event"), fields.get("channel")
