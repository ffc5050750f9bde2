"""The Flask extension: settings, broker and authorizer for each app, and ``publish``."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import threading
import time
import typing as t
import weakref

import itsdangerous
from flask import Flask, Response, current_app, has_app_context
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .broker import Broker, make_broker
from .broker.fanout import Fanout
from .config import Settings, load_settings
from .errors import DataTooLarge, InvalidChannel, InvalidToken
from .events import Event, check_field, encode_data, encode_event
from .jobs import JOB_PREFIX, Job, is_job, start_job
from .jobs import TOKEN_SECONDS as JOB_TOKEN_SECONDS
from .metrics import metrics
from .viewstream import stream_items

__all__ = ["SSE"]

#: The channel a stream or a publish uses when it names none.
DEFAULT_CHANNEL = "default"

_CHANNEL = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")

#: Every app state in this process, so that a stopping worker can end all streams.
_STATES: weakref.WeakSet[_State] = weakref.WeakSet()

Authorizer = t.Callable[[str], bool]

_TOKEN_SALT = "sse-flask.subscribe"


class SSE:
    """Server-sent events for a Flask app: mounts the blueprint and publishes events.

    ::

        sse = SSE(app)          # or: sse = SSE(); sse.init_app(app)
        sse.publish({"order": 7}, event="order", channel="user:42")

    :param app: the app to set up now; otherwise call :meth:`init_app` later.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._authorize: Authorizer | None = None
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the settings, start the broker and mount the blueprint on ``app``.

        The settings are resolved once, here: the default, then ``app.config``, then the
        environment variable of the same name. The keys read are ``SSE_URL_PREFIX``,
        ``SSE_BROKER_URL``, ``SSE_HEARTBEAT``, ``SSE_RETRY_MS``, ``SSE_HISTORY``,
        ``SSE_QUEUE_SIZE``, ``SSE_MAX_DATA_BYTES``, ``SSE_MAX_CONNECTIONS``,
        ``SSE_MAX_STREAMS_PER_ADDRESS``, ``SSE_MAX_STREAM_SECONDS``, ``SSE_PUBLISH_TOKEN``,
        ``SSE_OPEN_PUBLISH``, ``SSE_CORS_ORIGINS``, ``SSE_PRIVATE_PREFIXES`` and
        ``SSE_JOB_RETENTION``.

        :raises ConfigError: if a setting has a value that is not allowed.
        :raises RuntimeError: if ``app`` already has an SSE extension.
        """
        if "sse" in app.extensions:
            raise RuntimeError("this app already has an SSE extension; call init_app(app) once per app")
        settings = load_settings(app.config, os.environ)
        from .blueprint import blueprint, enable_cors, json_method_not_allowed, warn_open_publish

        state = _State(self, settings, make_broker(settings))
        app.extensions["sse"] = state
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        handlers = app.error_handler_spec[None]
        if 405 not in handlers and not {HTTPException, MethodNotAllowed} & set(handlers.get(None, {})):
            app.register_error_handler(MethodNotAllowed, json_method_not_allowed)
        if settings.cors_origins:
            enable_cors(app, settings)
        warn_open_publish(app, settings)
        self._apps.add(app)
        _STATES.add(state)

    def publish(self, data: t.Any, event: str | None = None, channel: str | None = None) -> str:
        """Publish an event to every stream listening on ``channel``; return its id.

        Safe from any thread or greenlet, inside or outside a request. Outside an app
        context, the one app this extension was set up on is used.

        :param data: a string, sent as it is, or any JSON value, sent as compact JSON.
        :param event: the event type; ``None`` means ``message``.
        :param channel: the channel; ``None`` means ``default``.
        :raises ValueError: if the event type is empty or contains CR, LF or NUL, the
            channel name is not allowed, or the data cannot be encoded
            (:class:`~sse_flask.errors.InvalidInput` and its subclasses).
        :raises DataTooLarge: if the encoded data is over ``SSE_MAX_DATA_BYTES``.
        :raises BrokerUnavailable: if the broker could not be reached: nothing was sent.
        """
        return self._state().publish(data, event, channel)

    def stream(self, items: t.Iterable[t.Any]) -> Response:
        """Answer the current request with an event stream of its own: one event per item
        of ``items``, then ``event: done``.

        A :class:`str` is sent as it is, an :class:`~sse_flask.Event` as given, any other
        value as compact JSON; ids are ``1``, ``2``, ... unless an ``Event`` has its own.
        ``items`` runs apart from the writer (a greenlet under gevent, a thread otherwise)
        inside the view's request context, so heartbeats go out while it produces nothing.
        An exception in it sends ``event: error`` with ``{"error": "..."}`` (the traceback
        goes to the log). When the client goes away, ``items`` is closed (``GeneratorExit``
        in a generator) and the request's teardown runs: at once under gevent, at the
        latest at the next heartbeat elsewhere (on threads, once the step running returns).

        ::

            @app.post("/ask")
            def ask():
                return sse.stream(generate_answer(request.get_json()["prompt"]))

        :raises RuntimeError: outside a request.
        """
        state = self._state()
        return stream_items(items, settings=state.settings, slots=state, fanout=state.views)

    def start_job(self, function: t.Callable[..., t.Any], /, *args: t.Any, **kwargs: t.Any) -> Job:
        """Call ``function(*args, **kwargs)`` apart from the request (a greenlet under
        gevent, a thread otherwise, inside an app context of its own) and publish each item
        it yields to the job's private channel, then ``event: done`` (or ``error``, or
        ``cancelled``).

        Hand :attr:`Job.channel` and :attr:`Job.token` to the page, which opens
        ``/events?channel=<channel>&token=<token>``: the stream starts at the job's first
        event (or after ``Last-Event-ID``) and ends after its last, and a client that
        drops resumes with every event exactly once. The events are kept until
        ``SSE_JOB_RETENTION`` seconds after the job ends, whatever ``SSE_HISTORY`` is.

        ::

            @app.post("/jobs")
            def start():
                job = sse.start_job(generate_answer, request.get_json()["prompt"])
                return {"channel": job.channel, "token": job.token}

        :raises RuntimeError: if the app has no ``SECRET_KEY`` (the token is signed with it).
        :raises BrokerUnavailable: if the broker cannot be reached: the job did not start.
        """
        app = self._app()
        state = t.cast(_State, app.extensions["sse"])
        # The token is signed with the app's SECRET_KEY; a new app context only outside
        # one, since leaving it would run the app's teardown in the middle of a request.
        with contextlib.nullcontext() if has_app_context() else app.app_context():
            return start_job(
                function,
                args,
                kwargs,
                app=app,
                broker=state.broker,
                frame=state.frame,
                token=lambda channel: self.subscribe_token(channel, expires_in=JOB_TOKEN_SECONDS),
            )

    def cancel_job(self, channel: str) -> None:
        """Cancel the job of ``channel`` wherever it runs (with the Redis broker, in any
        worker or host): its generator is closed and the job ends with ``cancelled``.
        Nothing happens if it has ended already.

        :raises InvalidChannel: if ``channel`` is not a job's.
        :raises BrokerUnavailable: if the broker cannot be reached.
        """
        if not is_job(check_channel(channel)):
            raise InvalidChannel(
                f"{channel!r:.140} is not a job's channel (they start with {JOB_PREFIX!r})"
            )
        self._state().broker.cancel_job(channel)

    def authorizer(self, function: Authorizer) -> Authorizer:
        """Register ``function(channel) -> bool``, called in the request context of each
        ``/events`` request for each channel it asks for; ``False`` answers 403.

        It replaces the default, which lets every channel through except those starting
        with one of ``SSE_PRIVATE_PREFIXES``, which need a token from
        :meth:`subscribe_token`.
        """
        self._authorize = function
        return function

    def subscribe_token(self, *channels: str, expires_in: float = 3600) -> str:
        """Sign a token that lets its holder read ``channels`` for ``expires_in`` seconds.

        Mint it in a view for the signed-in user and hand it to the page, which passes it
        as ``/events?token=...`` (EventSource cannot set headers). A stream opened with it
        ends when it expires, so not renewing a token revokes access within its lifetime.
        Signed with the app's ``SECRET_KEY``, which every worker must share.

        :raises InvalidChannel: if a channel name is not allowed.
        :raises RuntimeError: if the app has no ``SECRET_KEY``.
        """
        for channel in channels:
            check_channel(channel)
        return str(self._state().token_serializer().dumps({"c": list(channels), "e": time.time() + expires_in}))

    def _state(self) -> _State:
        return t.cast(_State, self._app().extensions["sse"])

    def _app(self) -> Flask:
        """The current app, or outside an app context the one this extension is set up on."""
        if has_app_context():
            state = current_app.extensions.get("sse")
            if state is None or state.sse is not self:
                raise RuntimeError("this SSE extension is not set up on the current app; call init_app(app) first")
            return t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        apps = list(self._apps)
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise RuntimeError("this SSE extension has no app; call init_app(app) first")
        raise RuntimeError("this SSE extension serves several apps; publish inside 'with app.app_context():'")


@dataclasses.dataclass(eq=False)
class _State:
    """What one app's extension holds, in ``app.extensions["sse"]``."""

    sse: SSE
    settings: Settings
    broker: Broker
    #: The app's view streams (``sse.stream``), each on a channel of its own.
    views: Fanout = dataclasses.field(default_factory=Fanout)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _streams: int = 0
    _by_address: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def publish(self, data: t.Any, event: str | None, channel: str | None) -> str:
        """Validate, encode once, and hand the frame to the broker."""
        channel = check_channel(DEFAULT_CHANNEL if channel is None else channel)
        if is_job(channel):
            raise InvalidChannel(f"channel {channel!r} is a job's: only the job publishes to it")
        frame = self.frame(data, event)
        started = time.perf_counter()
        event_id = self.broker.publish(channel, frame)
        figures = metrics()
        figures.publish_seconds.observe(time.perf_counter() - started)
        figures.published.inc()
        return event_id

    def frame(self, data: t.Any, event: str | None) -> bytes:
        """``data`` and ``event`` checked and encoded as one frame, without an id.

        :raises ValueError: if the event type or the data is not allowed.
        :raises DataTooLarge: if the encoded data is over ``SSE_MAX_DATA_BYTES``.
        """
        if event is not None:
            check_field("event type", event)
        text = encode_data(data)
        size = len(text.encode("utf-8"))
        if size > self.settings.max_data_bytes:
            raise DataTooLarge(
                f"data is {size} bytes encoded as UTF-8, over the limit of {self.settings.max_data_bytes} (SSE_MAX_DATA_BYTES)"
            )
        return encode_event(Event(data=text, event=event))

    def token_serializer(self) -> itsdangerous.URLSafeSerializer:
        secret = current_app.secret_key if has_app_context() else None
        if not secret:
            raise RuntimeError("subscribe tokens are signed with the app's SECRET_KEY; set app.config['SECRET_KEY']")
        return itsdangerous.URLSafeSerializer(secret, salt=_TOKEN_SALT)

    def read_token(self, token: str | None) -> Grant | None:
        """The channels ``token`` grants and until when; ``None`` without a token.

        :raises InvalidToken: if it is forged, malformed or expired.
        """
        if token is None:
            return None
        try:
            claims = self.token_serializer().loads(token)
            grant = Grant(frozenset(claims["c"]), float(claims["e"]))
        except (itsdangerous.BadSignature, RuntimeError, KeyError, TypeError, ValueError):
            raise InvalidToken("the token is not one this server signed; ask the app for a new one") from None
        if grant.expires_at <= time.time():
            raise InvalidToken("the token has expired; ask the app for a new one")
        return grant

    def refusal(self, channel: str, grant: Grant | None) -> str | None:
        """Why the current request, holding ``grant``, may not subscribe to ``channel``;
        ``None`` if it may."""
        if is_job(channel):
            # Whatever the authorizer says: the token from start_job is the only way in.
            if grant is not None and channel in grant.channels:
                return None
            return f"channel {channel!r} is a job's: open it with the token that start_job gave"
        if self.sse._authorize is not None:
            return None if self.sse._authorize(channel) else f"you may not listen to channel {channel!r}"
        if self.is_private(channel) and (grant is None or channel not in grant.channels):
            return f"channel {channel!r} is private: open the stream with a ?token= from the app that grants it"
        return None

    def is_private(self, channel: str) -> bool:
        return is_job(channel) or channel.startswith(self.settings.private_prefixes)

    def reserve_stream(self, address: str, limit: int | None, refusal: str) -> str | None:
        """Take a stream slot for ``address``; return why not if the limits are reached:
        ``limit`` streams in all (``refusal`` says why; see
        :func:`sse_flask.servers.stream_limit`) or ``SSE_MAX_STREAMS_PER_ADDRESS``."""
        settings = self.settings
        with self._lock:
            if limit is not None and self._streams >= limit:
                return refusal
            if settings.max_streams_per_address and self._by_address[address] >= settings.max_streams_per_address:
                return f"{address} already has {self._by_address[address]} streams open, the limit per address (SSE_MAX_STREAMS_PER_ADDRESS)"
            self._streams += 1
            self._by_address[address] += 1
        return None

    def release_stream(self, address: str) -> None:
        with self._lock:
            self._streams -= 1
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]


class Grant(t.NamedTuple):
    """What a subscribe token allows: these channels, until this time (seconds since the epoch)."""

    channels: frozenset[str]
    expires_at: float


def check_channel(channel: t.Any) -> str:
    """Return ``channel`` if it is an allowed channel name.

    :raises InvalidChannel: quoting the name and what is allowed.
    """
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise InvalidChannel(
            f"channel must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ -, got {channel!r:.140}"
        )
    return channel


def stop_publishing() -> None:
    """Refuse publishes whose history would go with this process; a stopping gunicorn
    worker calls it as soon as it is told to stop, before its streams close."""
    for state in list(_STATES):
        state.broker.stop_publishing()


def close_all_streams() -> None:
    """End every open stream in this process, so that clients reconnect elsewhere.

    A stopping gunicorn worker calls it: otherwise it would wait for its streams until the
    graceful timeout, and its clients would hang until then.
    """
    for state in list(_STATES):
        state.broker.close()
        state.views.close_all()
