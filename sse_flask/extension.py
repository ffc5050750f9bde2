"""The Flask extension: settings, broker and authorizer for each app, and ``publish``."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import threading
import time
import typing as t
import weakref

import itsdangerous
from flask import Flask, current_app, has_app_context
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .broker import Broker, make_broker
from .config import Settings, load_settings
from .errors import DataTooLarge, InvalidChannel, InvalidToken
from .events import Event, check_field, encode_data, encode_event
from .metrics import metrics

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
        ``SSE_CORS_ORIGINS`` and ``SSE_PRIVATE_PREFIXES``; with Redis also
        ``SSE_REDIS_WAIT_REPLICAS`` (a publish returns once that many replicas have it).
        ``SSE_BROKER_URL`` may be ``redis://``, ``rediss://`` (TLS), ``unix://``, or
        ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``
        to follow the primary that those Sentinels name through a failover.

        :raises ConfigError: if a setting has a value that is not allowed.
        :raises RuntimeError: if ``app`` already has an SSE extension.
        """
        if "sse" in app.extensions:
            raise RuntimeError("this app already has an SSE extension; call init_app(app) once per app")
        settings = load_settings(app.config, os.environ)
        from .blueprint import blueprint, enable_cors, json_method_not_allowed

        state = _State(self, settings, make_broker(settings))
        app.extensions["sse"] = state
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        handlers = app.error_handler_spec[None]
        if 405 not in handlers and not {HTTPException, MethodNotAllowed} & set(handlers.get(None, {})):
            app.register_error_handler(MethodNotAllowed, json_method_not_allowed)
        if settings.cors_origins:
            enable_cors(app, settings)
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
        if has_app_context():
            state = current_app.extensions.get("sse")
            if state is None or state.sse is not self:
                raise RuntimeError("this SSE extension is not set up on the current app; call init_app(app) first")
            return t.cast(_State, state)
        apps = list(self._apps)
        if len(apps) == 1:
            return t.cast(_State, apps[0].extensions["sse"])
        if not apps:
            raise RuntimeError("this SSE extension has no app; call init_app(app) first")
        raise RuntimeError("this SSE extension serves several apps; publish inside 'with app.app_context():'")


@dataclasses.dataclass(eq=False)
class _State:
    """What one app's extension holds, in ``app.extensions["sse"]``."""

    sse: SSE
    settings: Settings
    broker: Broker
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _streams: int = 0
    _by_address: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def publish(self, data: t.Any, event: str | None, channel: str | None) -> str:
        """Validate, encode once, and hand the frame to the broker."""
        channel = check_channel(DEFAULT_CHANNEL if channel is None else channel)
        if event is not None:
            check_field("event type", event)
        text = encode_data(data)
        size = len(text.encode("utf-8"))
        if size > self.settings.max_data_bytes:
            raise DataTooLarge(
                f"data is {size} bytes encoded as UTF-8, over the limit of {self.settings.max_data_bytes} (SSE_MAX_DATA_BYTES)"
            )
        frame = encode_event(Event(data=text, event=event))
        started = time.perf_counter()
        event_id = self.broker.publish(channel, frame)
        figures = metrics()
        figures.publish_seconds.observe(time.perf_counter() - started)
        figures.published.inc()
        return event_id

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
        if self.sse._authorize is not None:
            return None if self.sse._authorize(channel) else f"you may not listen to channel {channel!r}"
        if self.is_private(channel) and (grant is None or channel not in grant.channels):
            return f"channel {channel!r} is private: open the stream with a ?token= from the app that grants it"
        return None

    def is_private(self, channel: str) -> bool:
        return channel.startswith(self.settings.private_prefixes)

    def reserve_stream(self, address: str) -> str | None:
        """Take a stream slot for ``address``; return why not if the limits are reached."""
        settings = self.settings
        with self._lock:
            if settings.max_connections and self._streams >= settings.max_connections:
                return f"this worker already serves {self._streams} streams, its limit (SSE_MAX_CONNECTIONS)"
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


def close_all_streams() -> None:
    """End every open stream in this process, so that clients reconnect elsewhere.

    A stopping gunicorn worker calls it: otherwise it would wait for its streams until the
    graceful timeout, and its clients would hang until then.
    """
    for state in list(_STATES):
        state.broker.close()
