"""The ``SSE_*`` settings: their defaults, and how they are read and checked.

Each key is resolved once, when the app is set up: the default, then ``app.config``, then
the environment variable of the same name, so that a deployment can change a setting
without touching code. A bad value fails at start-up with a message naming the key, where
its value came from, and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

from .errors import ConfigError

__all__ = ["DEFAULTS", "Settings", "cast_setting", "load_settings"]

#: Every key sse_flask reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "SSE_URL_PREFIX": "",
    "SSE_BROKER_URL": None,
    "SSE_HEARTBEAT": 15,
    "SSE_RETRY_MS": 3000,
    "SSE_HISTORY": 1000,
    "SSE_QUEUE_SIZE": 1000,
    "SSE_MAX_DATA_BYTES": 65536,
    "SSE_MAX_CONNECTIONS": 0,
    "SSE_MAX_STREAMS_PER_ADDRESS": 0,
    "SSE_MAX_STREAM_SECONDS": 0,
    "SSE_PUBLISH_TOKEN": None,
    "SSE_OPEN_PUBLISH": False,
    "SSE_CORS_ORIGINS": None,
    "SSE_PRIVATE_PREFIXES": "user:",
    "SSE_COMPRESS": False,
    "SSE_JOB_RETENTION": 300,
    "SSE_REDIS_WAIT_REPLICAS": 0,
}

_BROKER_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings, one attribute per ``SSE_*`` key (lower case, no prefix)."""

    url_prefix: str = ""
    broker_url: str | None = None
    heartbeat: float = 15.0
    retry_ms: int = 3000
    history: int = 1000
    queue_size: int = 1000
    max_data_bytes: int = 65536
    max_connections: int = 0
    max_streams_per_address: int = 0
    max_stream_seconds: float = 0.0
    publish_token: str | None = None
    open_publish: bool = False
    cors_origins: tuple[str, ...] = ()
    private_prefixes: tuple[str, ...] = ("user:",)
    compress: bool = False
    job_retention: float = 300.0
    redis_wait_replicas: int = 0


def load_settings(config: t.Mapping[str, t.Any], environ: t.Mapping[str, str]) -> Settings:
    """Resolve every ``SSE_*`` key: the default, then ``config``, then ``environ``.

    :param config: usually ``app.config``.
    :param environ: usually ``os.environ``; its values are strings.
    :raises ConfigError: naming the key, its source and what is allowed.
    """
    values = {}
    for key, default in DEFAULTS.items():
        value, source = default, "the default"
        if key in config:
            value, source = config[key], "app.config"
        if key in environ:
            value, source = environ[key], "the environment"
        values[key[4:].lower()] = cast_setting(key, value, source)
    return Settings(**values)


def cast_setting(key: str, value: t.Any, source: str) -> t.Any:
    """``value`` for the ``SSE_*`` ``key`` as the app will hold it, so that a value from
    elsewhere (``sse-flask serve --broker``) is checked as the app would check it.

    :param source: where ``value`` came from, for the message: ``"app.config"``, ``"--broker"``.
    :raises ConfigError: naming the key, its source and what is allowed.
    """
    cast, what = _CASTS[key]
    try:
        return cast(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key} (from {source}) must be {what}, got {value!r}") from None


def _number(minimum: float, *, integer: bool, above: bool = False) -> t.Callable[[t.Any], t.Any]:
    """A cast to a finite number of at least (``above``: more than) ``minimum``."""

    def cast(value: t.Any) -> t.Any:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, str):
            value = value.strip()
        number = int(value) if integer else float(value)
        if integer and isinstance(value, float) and value != number:
            raise ValueError(value)
        if not minimum <= number < math.inf or (above and number == minimum):
            raise ValueError(value)
        return number

    return cast


def _url_prefix(value: t.Any) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")) or "//" in value:
        raise ValueError(value)
    return value.rstrip("/")


def _broker_url(value: t.Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(_BROKER_SCHEMES):
        raise ValueError(value)
    return value


def _optional_text(value: t.Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _flag(value: t.Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def _strings(value: t.Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise TypeError(value)
    return tuple(item.strip() for item in items if item.strip())


_CASTS: dict[str, tuple[t.Callable[[t.Any], t.Any], str]] = {
    "SSE_URL_PREFIX": (_url_prefix, "empty or a path starting with '/', such as '/sse'"),
    "SSE_BROKER_URL": (
        _broker_url,
        "unset or a redis://, rediss://, unix:// or redis+sentinel:// URL",
    ),
    "SSE_HEARTBEAT": (_number(0, integer=False, above=True), "a number of seconds greater than 0"),
    "SSE_RETRY_MS": (_number(0, integer=True), "a whole number of milliseconds, 0 or more"),
    "SSE_HISTORY": (_number(0, integer=True), "a whole number of events, 0 or more"),
    "SSE_QUEUE_SIZE": (_number(1, integer=True), "a whole number of events, 1 or more"),
    "SSE_MAX_DATA_BYTES": (_number(1, integer=True), "a whole number of bytes, 1 or more"),
    "SSE_MAX_CONNECTIONS": (
        _number(0, integer=True),
        "a whole number of streams, 0 (no limit) or more",
    ),
    "SSE_MAX_STREAMS_PER_ADDRESS": (
        _number(0, integer=True),
        "a whole number of streams, 0 (no limit) or more",
    ),
    "SSE_MAX_STREAM_SECONDS": (_number(0, integer=False), "a number of seconds, 0 (never) or more"),
    "SSE_PUBLISH_TOKEN": (_optional_text, "unset or a string"),
    "SSE_OPEN_PUBLISH": (_flag, "true or false (1/0, yes/no, on/off)"),
    "SSE_CORS_ORIGINS": (_strings, "unset, a comma-separated string of origins, or a list of them"),
    "SSE_PRIVATE_PREFIXES": (
        _strings,
        "a comma-separated string of channel prefixes, or a list of them",
    ),
    "SSE_COMPRESS": (_flag, "true or false (1/0, yes/no, on/off)"),
    "SSE_JOB_RETENTION": (_number(0, integer=False), "a number of seconds, 0 or more"),
    "SSE_REDIS_WAIT_REPLICAS": (
        _number(0, integer=True),
        "a whole number of replicas, 0 (do not wait) or more",
    ),
}
