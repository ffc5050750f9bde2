"""Settings, :func:`sse_flask.config.load_settings`: defaults, precedence, casts and refusals.

Contract lines pinned: "Resolved once ...: the default, then `app.config`, then the
environment variable of the same name (the environment wins)", "A bad value fails at
start-up with a message naming the key, where it came from, and what is allowed", and the
table of keys and defaults.
"""

from __future__ import annotations

import dataclasses
import typing as t

import pytest

from sse_flask import ConfigError
from sse_flask.config import DEFAULTS, Settings, load_settings

#: The contract's table of keys and defaults, as resolved attributes.
CONTRACT_DEFAULTS = {
    "url_prefix": "",
    "broker_url": None,
    "heartbeat": 15,
    "retry_ms": 3000,
    "history": 1000,
    "queue_size": 1000,
    "max_data_bytes": 65536,
    "max_connections": 0,
    "max_streams_per_address": 0,
    "max_stream_seconds": 0,
    "publish_token": None,
    "open_publish": False,
    "cors_origins": (),
    "private_prefixes": ("user:",),
    "compress": False,
    "job_retention": 300,
    "redis_wait_replicas": 0,
}

#: What each key must be, in the words of its error message.
ALLOWED = {
    "SSE_URL_PREFIX": "empty or a path starting with '/', such as '/sse'",
    "SSE_BROKER_URL": "unset or a redis://, rediss://, unix:// or redis+sentinel:// URL",
    "SSE_HEARTBEAT": "a number of seconds greater than 0",
    "SSE_RETRY_MS": "a whole number of milliseconds, 0 or more",
    "SSE_HISTORY": "a whole number of events, 0 or more",
    "SSE_QUEUE_SIZE": "a whole number of events, 1 or more",
    "SSE_MAX_DATA_BYTES": "a whole number of bytes, 1 or more",
    "SSE_MAX_CONNECTIONS": "a whole number of streams, 0 (no limit) or more",
    "SSE_MAX_STREAMS_PER_ADDRESS": "a whole number of streams, 0 (no limit) or more",
    "SSE_MAX_STREAM_SECONDS": "a number of seconds, 0 (never) or more",
    "SSE_PUBLISH_TOKEN": "unset or a string",
    "SSE_OPEN_PUBLISH": "true or false (1/0, yes/no, on/off)",
    "SSE_CORS_ORIGINS": "unset, a comma-separated string of origins, or a list of them",
    "SSE_PRIVATE_PREFIXES": "a comma-separated string of channel prefixes, or a list of them",
    "SSE_COMPRESS": "true or false (1/0, yes/no, on/off)",
    "SSE_JOB_RETENTION": "a number of seconds, 0 or more",
    "SSE_REDIS_WAIT_REPLICAS": "a whole number of replicas, 0 (do not wait) or more",
}


def _attribute(key: str) -> str:
    return key.removeprefix("SSE_").lower()


def test_defaults() -> None:
    """With nothing set, every key has the contract's default."""
    settings = load_settings({}, {})
    assert dataclasses.asdict(settings) == CONTRACT_DEFAULTS
    assert settings == Settings()
    assert isinstance(settings.heartbeat, float) and isinstance(settings.max_stream_seconds, float)


def test_every_key_is_known() -> None:
    """DEFAULTS, Settings and the documented keys name the same settings."""
    assert sorted(DEFAULTS) == sorted(ALLOWED)
    assert sorted(map(_attribute, DEFAULTS)) == sorted(
        field.name for field in dataclasses.fields(Settings)
    )


def test_settings_are_frozen() -> None:
    """Settings are resolved once; nobody changes them afterwards."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_settings({}, {}).heartbeat = 1  # type: ignore[misc]


def test_unrelated_keys_are_ignored() -> None:
    """Other config keys and environment variables change nothing."""
    assert (
        load_settings({"SECRET_KEY": "x", "SSE_UNKNOWN": 1}, {"PATH": "/bin", "SSE_NOPE": "x"})
        == Settings()
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("SSE_URL_PREFIX", "/sse", "/sse"),
        ("SSE_URL_PREFIX", "/sse/", "/sse"),
        ("SSE_URL_PREFIX", "/a/b", "/a/b"),
        ("SSE_URL_PREFIX", "", ""),
        ("SSE_BROKER_URL", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("SSE_BROKER_URL", "rediss://user:pw@host:6380/1", "rediss://user:pw@host:6380/1"),
        ("SSE_BROKER_URL", "unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("SSE_BROKER_URL", "", None),
        ("SSE_BROKER_URL", None, None),
        ("SSE_HEARTBEAT", 5, 5.0),
        ("SSE_HEARTBEAT", 0.5, 0.5),
        ("SSE_HEARTBEAT", "2.5", 2.5),
        ("SSE_RETRY_MS", 0, 0),
        ("SSE_RETRY_MS", 2500, 2500),
        ("SSE_RETRY_MS", 2000.0, 2000),
        ("SSE_RETRY_MS", "7", 7),
        ("SSE_HISTORY", 0, 0),
        ("SSE_HISTORY", 10, 10),
        ("SSE_QUEUE_SIZE", 1, 1),
        ("SSE_MAX_DATA_BYTES", 1024, 1024),
        ("SSE_MAX_CONNECTIONS", 100, 100),
        ("SSE_MAX_STREAMS_PER_ADDRESS", 5, 5),
        ("SSE_MAX_STREAM_SECONDS", 300, 300.0),
        ("SSE_MAX_STREAM_SECONDS", 0.25, 0.25),
        ("SSE_PUBLISH_TOKEN", "s3cret", "s3cret"),
        ("SSE_PUBLISH_TOKEN", "", None),
        ("SSE_PUBLISH_TOKEN", None, None),
        ("SSE_OPEN_PUBLISH", True, True),
        ("SSE_OPEN_PUBLISH", False, False),
        (
            "SSE_CORS_ORIGINS",
            ["https://a.example", "https://b.example"],
            ("https://a.example", "https://b.example"),
        ),
        ("SSE_CORS_ORIGINS", ("https://a.example",), ("https://a.example",)),
        ("SSE_CORS_ORIGINS", "https://a.example", ("https://a.example",)),
        ("SSE_CORS_ORIGINS", [], ()),
        ("SSE_CORS_ORIGINS", None, ()),
    ],
)
def test_app_config_overrides_default(key: str, value: t.Any, expected: t.Any) -> None:
    """A value in app.config replaces the default, cast to the setting's type."""
    resolved = getattr(load_settings({key: value}, {}), _attribute(key))
    assert resolved == expected and type(resolved) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("SSE_URL_PREFIX", "/events-here", "/events-here"),
        ("SSE_URL_PREFIX", "/sse/", "/sse"),
        ("SSE_URL_PREFIX", "", ""),
        ("SSE_BROKER_URL", "redis://10.0.0.1:6379/2", "redis://10.0.0.1:6379/2"),
        ("SSE_BROKER_URL", "", None),
        ("SSE_HEARTBEAT", "1", 1.0),
        ("SSE_HEARTBEAT", "0.05", 0.05),
        ("SSE_HEARTBEAT", " 2 ", 2.0),
        ("SSE_HEARTBEAT", "1e1", 10.0),
        ("SSE_RETRY_MS", "0", 0),
        ("SSE_RETRY_MS", "1234", 1234),
        ("SSE_RETRY_MS", " 50\n", 50),
        ("SSE_HISTORY", "0", 0),
        ("SSE_HISTORY", "20", 20),
        ("SSE_QUEUE_SIZE", "1", 1),
        ("SSE_QUEUE_SIZE", "500", 500),
        ("SSE_MAX_DATA_BYTES", "1", 1),
        ("SSE_MAX_DATA_BYTES", "1048576", 1048576),
        ("SSE_MAX_CONNECTIONS", "0", 0),
        ("SSE_MAX_CONNECTIONS", "10000", 10000),
        ("SSE_MAX_STREAMS_PER_ADDRESS", "0", 0),
        ("SSE_MAX_STREAMS_PER_ADDRESS", "8", 8),
        ("SSE_MAX_STREAM_SECONDS", "0", 0.0),
        ("SSE_MAX_STREAM_SECONDS", "3600", 3600.0),
        ("SSE_MAX_STREAM_SECONDS", "1.5", 1.5),
        ("SSE_PUBLISH_TOKEN", "tok en", "tok en"),
        ("SSE_PUBLISH_TOKEN", "", None),
        ("SSE_OPEN_PUBLISH", "yes", True),
        ("SSE_OPEN_PUBLISH", "0", False),
        ("SSE_CORS_ORIGINS", "https://a.example", ("https://a.example",)),
        (
            "SSE_CORS_ORIGINS",
            "https://a.example, https://b.example:8443",
            ("https://a.example", "https://b.example:8443"),
        ),
        ("SSE_CORS_ORIGINS", " https://a.example ,, ", ("https://a.example",)),
        ("SSE_CORS_ORIGINS", "", ()),
    ],
)
def test_environment_casts(key: str, value: str, expected: t.Any) -> None:
    """Each key's environment string is cast to the setting's type."""
    resolved = getattr(load_settings({}, {key: value}), _attribute(key))
    assert resolved == expected and type(resolved) is type(expected)


@pytest.mark.parametrize(
    ("key", "config_value", "environ_value", "expected"),
    [
        ("SSE_URL_PREFIX", "/from-config", "/from-env", "/from-env"),
        ("SSE_URL_PREFIX", "/from-config", "", ""),
        ("SSE_BROKER_URL", "redis://config:6379/0", "redis://env:6379/0", "redis://env:6379/0"),
        ("SSE_BROKER_URL", "redis://config:6379/0", "", None),
        ("SSE_HEARTBEAT", 30, "2", 2.0),
        ("SSE_RETRY_MS", 5000, "1000", 1000),
        ("SSE_HISTORY", 5, "50", 50),
        ("SSE_QUEUE_SIZE", 5, "50", 50),
        ("SSE_MAX_DATA_BYTES", 10, "20", 20),
        ("SSE_MAX_CONNECTIONS", 10, "0", 0),
        ("SSE_MAX_STREAMS_PER_ADDRESS", 10, "2", 2),
        ("SSE_MAX_STREAM_SECONDS", 60, "0", 0.0),
        ("SSE_PUBLISH_TOKEN", "config-token", "env-token", "env-token"),
        ("SSE_PUBLISH_TOKEN", "config-token", "", None),
        ("SSE_OPEN_PUBLISH", True, "off", False),
        (
            "SSE_CORS_ORIGINS",
            ["https://config.example"],
            "https://env.example",
            ("https://env.example",),
        ),
    ],
)
def test_environment_overrides_app_config(
    key: str, config_value: t.Any, environ_value: str, expected: t.Any
) -> None:
    """The environment wins over app.config, even when it sets a value back to empty."""
    assert (
        getattr(load_settings({key: config_value}, {key: environ_value}), _attribute(key))
        == expected
    )


def test_sources_mix_per_key() -> None:
    """Each key is resolved on its own: default, app.config and environment side by side."""
    settings = load_settings(
        {"SSE_HEARTBEAT": 5, "SSE_HISTORY": 7}, {"SSE_HISTORY": "9", "SSE_RETRY_MS": "11"}
    )
    assert (settings.heartbeat, settings.history, settings.retry_ms, settings.queue_size) == (
        5.0,
        9,
        11,
        1000,
    )


_ENV = "the environment"
_CONFIG = "app.config"


@pytest.mark.parametrize(
    ("key", "source", "value"),
    [
        ("SSE_URL_PREFIX", _ENV, "sse"),
        ("SSE_URL_PREFIX", _ENV, "//sse"),
        ("SSE_URL_PREFIX", _ENV, "/a//b"),
        ("SSE_URL_PREFIX", _CONFIG, "sse/"),
        ("SSE_URL_PREFIX", _CONFIG, None),
        ("SSE_URL_PREFIX", _CONFIG, 5),
        ("SSE_BROKER_URL", _ENV, "localhost:6379"),
        ("SSE_BROKER_URL", _ENV, "http://127.0.0.1:6379"),
        ("SSE_BROKER_URL", _ENV, "memory"),
        ("SSE_BROKER_URL", _CONFIG, 6379),
        ("SSE_HEARTBEAT", _ENV, "soon"),
        ("SSE_HEARTBEAT", _ENV, "0"),
        ("SSE_HEARTBEAT", _ENV, "-1"),
        ("SSE_HEARTBEAT", _ENV, ""),
        ("SSE_HEARTBEAT", _ENV, "inf"),
        ("SSE_HEARTBEAT", _ENV, "nan"),
        ("SSE_HEARTBEAT", _CONFIG, 0),
        ("SSE_HEARTBEAT", _CONFIG, -0.5),
        ("SSE_HEARTBEAT", _CONFIG, True),
        ("SSE_HEARTBEAT", _CONFIG, "soon"),
        ("SSE_HEARTBEAT", _CONFIG, None),
        ("SSE_HEARTBEAT", _CONFIG, float("inf")),
        ("SSE_RETRY_MS", _ENV, "-1"),
        ("SSE_RETRY_MS", _ENV, "1.5"),
        ("SSE_RETRY_MS", _ENV, "3s"),
        ("SSE_RETRY_MS", _ENV, ""),
        ("SSE_RETRY_MS", _ENV, "inf"),
        ("SSE_RETRY_MS", _CONFIG, 1.5),
        ("SSE_RETRY_MS", _CONFIG, -1),
        ("SSE_RETRY_MS", _CONFIG, False),
        ("SSE_RETRY_MS", _CONFIG, None),
        ("SSE_RETRY_MS", _CONFIG, float("nan")),
        ("SSE_RETRY_MS", _CONFIG, float("inf")),
        ("SSE_HISTORY", _ENV, "-1"),
        ("SSE_HISTORY", _ENV, "many"),
        ("SSE_HISTORY", _CONFIG, True),
        ("SSE_HISTORY", _CONFIG, float("inf")),
        ("SSE_QUEUE_SIZE", _ENV, "0"),
        ("SSE_QUEUE_SIZE", _ENV, "-5"),
        ("SSE_QUEUE_SIZE", _CONFIG, 0),
        ("SSE_QUEUE_SIZE", _CONFIG, 2.5),
        ("SSE_MAX_DATA_BYTES", _ENV, "0"),
        ("SSE_MAX_DATA_BYTES", _ENV, "64k"),
        ("SSE_MAX_DATA_BYTES", _CONFIG, 0),
        ("SSE_MAX_CONNECTIONS", _ENV, "-1"),
        ("SSE_MAX_CONNECTIONS", _ENV, "unlimited"),
        ("SSE_MAX_CONNECTIONS", _CONFIG, None),
        ("SSE_MAX_STREAMS_PER_ADDRESS", _ENV, "-1"),
        ("SSE_MAX_STREAMS_PER_ADDRESS", _ENV, "x"),
        ("SSE_MAX_STREAMS_PER_ADDRESS", _CONFIG, 1.5),
        ("SSE_MAX_STREAM_SECONDS", _ENV, "-1"),
        ("SSE_MAX_STREAM_SECONDS", _ENV, "forever"),
        ("SSE_MAX_STREAM_SECONDS", _ENV, "inf"),
        ("SSE_MAX_STREAM_SECONDS", _CONFIG, True),
        ("SSE_PUBLISH_TOKEN", _CONFIG, 123),
        ("SSE_PUBLISH_TOKEN", _CONFIG, b"bytes"),
        ("SSE_CORS_ORIGINS", _CONFIG, 5),
        ("SSE_CORS_ORIGINS", _CONFIG, [1, 2]),
        ("SSE_CORS_ORIGINS", _CONFIG, ["https://a.example", None]),
    ],
)
def test_bad_values(key: str, source: str, value: t.Any) -> None:
    """A bad value raises ConfigError naming the key, its source, what is allowed, and the value."""
    config, environ = ({key: value}, {}) if source == _CONFIG else ({}, {key: value})
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ)
    assert str(info.value) == f"{key} (from {source}) must be {ALLOWED[key]}, got {value!r}"
    assert isinstance(info.value, ValueError)


def test_bad_value_message_example() -> None:
    """The message reads as a sentence a deployer can act on."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"SSE_HEARTBEAT": "soon"})
    assert (
        str(info.value)
        == "SSE_HEARTBEAT (from the environment) must be a number of seconds greater than 0, got 'soon'"
    )


def test_environment_fixes_a_bad_app_config_value() -> None:
    """Only the value in force is checked: the environment can override a bad app.config one."""
    assert load_settings({"SSE_HEARTBEAT": "soon"}, {"SSE_HEARTBEAT": "3"}).heartbeat == 3.0


def test_bad_environment_beats_good_app_config() -> None:
    """A bad environment value fails even when app.config has a good one, and blames the environment."""
    with pytest.raises(ConfigError, match=r"^SSE_RETRY_MS \(from the environment\)"):
        load_settings({"SSE_RETRY_MS": 100}, {"SSE_RETRY_MS": "fast"})


@pytest.mark.parametrize("value", ["0.001", "0.009", "1e-6"])
def test_heartbeat_message_matches_what_is_refused(value: str) -> None:
    """A heartbeat the message calls allowed ("greater than 0") is not refused with that message."""
    try:
        settings = load_settings({}, {"SSE_HEARTBEAT": value})
    except ConfigError as e:
        assert "greater than 0" not in str(e), "the message says the refused value is allowed"  # noqa: PT017 (either outcome is allowed; the message must not contradict it)
    else:
        assert settings.heartbeat == float(value)
