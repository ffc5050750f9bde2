"""Per-app state and the channel rules, and the process's registry of app states.

:class:`AppState` is what :meth:`SSE.init_app <sse_flask.SSE.init_app>` puts in
``app.extensions["sse"]``: the settings, the broker, the app's view streams and its stream
slots. The blueprint and the extension reach the app through it, so it imports neither.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
import time
import typing as t

import itsdangerous
from flask import current_app, has_app_context

from . import servers
from .broker import Broker
from .broker.fanout import Fanout
from .config import Settings
from .errors import DataTooLarge, InvalidChannel, InvalidToken
from .events import Event, check_field, encode_data, encode_event
from .jobs import is_job
from .metrics import metrics

__all__ = ["DEFAULT_CHANNEL", "AppState", "Authorizer", "Grant", "check_channel"]

#: The channel a stream or a publish uses when it names none.
DEFAULT_CHANNEL = "default"

_CHANNEL = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")

Authorizer = t.Callable[[str], bool]

_TOKEN_SALT = "sse-flask.subscribe"


class Extension(t.Protocol):
    """What an app state needs of its :class:`~sse_flask.SSE`: the authorizer, if any."""

    _authorize: Authorizer | None


@dataclasses.dataclass(eq=False)
class AppState:
    """What one app's extension holds, in ``app.extensions["sse"]``."""

    sse: Extension
    settings: Settings
    broker: Broker
    #: The app's view streams (``sse.stream``), each on a channel of its own.
    views: Fanout = dataclasses.field(default_factory=Fanout)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _streams: int = 0
    _by_address: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        servers.register(self)

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
            raise RuntimeError(
                "subscribe tokens are signed with the app's SECRET_KEY; set app.config['SECRET_KEY']"
            )
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
            raise InvalidToken(
                "the token is not one this server signed; ask the app for a new one"
            ) from None
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
            return (
                None
                if self.sse._authorize(channel)
                else f"you may not listen to channel {channel!r}"
            )
        if self.is_private(channel) and (grant is None or channel not in grant.channels):
            return f"channel {channel!r} is private: open the stream with a ?token= from the app that grants it"
        return None

    def is_private(self, channel: str) -> bool:
        return is_job(channel) or channel.startswith(self.settings.private_prefixes)

    def reserve_stream(self, address: str, environ: t.Mapping[str, t.Any]) -> str | None:
        """Take a stream slot for ``address``; return why not if the limits are reached:
        what the server serving ``environ`` can hold (:func:`sse_flask.servers.stream_limit`,
        with ``SSE_MAX_CONNECTIONS``), or ``SSE_MAX_STREAMS_PER_ADDRESS``."""
        settings = self.settings
        limit, refusal = servers.stream_limit(environ, settings.max_connections)
        with self._lock:
            if limit is not None and self._streams >= limit:
                return refusal
            if (
                settings.max_streams_per_address
                and self._by_address[address] >= settings.max_streams_per_address
            ):
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
