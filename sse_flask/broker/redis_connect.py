"""Connections to Redis from an ``SSE_BROKER_URL``: ``redis://``, ``rediss://`` (TLS),
``unix://``, or ``redis+sentinel://`` to follow the primary that Sentinels name."""

from __future__ import annotations

import functools
import re
import typing as t

from ..errors import ConfigError

if t.TYPE_CHECKING:
    import redis as _redis

SENTINEL_SCHEME = "redis+sentinel://"
_SENTINEL_PORT = 26379


def connect(url: str, *, pool_size: int | None, **options: t.Any) -> _redis.Redis:
    """A client of the Redis that ``url`` names: through a blocking pool of ``pool_size``
    connections, or with ``None``, one connection of its own (the reader's). Behind
    Sentinel, each new connection asks the Sentinels where the primary is now."""
    import redis

    if not url.startswith(SENTINEL_SCHEME):
        if pool_size is None:
            return redis.Redis.from_url(url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=5, **options
        )
        return redis.Redis(connection_pool=pool)
    from redis.sentinel import Sentinel

    sentinels, service, primary = sentinel_address(url)
    timeouts = {"socket_connect_timeout": options["socket_connect_timeout"], "socket_timeout": 2}
    # redis-py types Sentinel from 8.2 on; before, its calls are untyped.
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        sentinels, sentinel_kwargs=timeouts, **timeouts
    )
    if pool_size is not None:
        options.update(
            connection_pool_class=blocking_sentinel_pool(), max_connections=pool_size, timeout=5
        )
    client = sentinel.master_for(service, **primary, **options)  # type: ignore[no-untyped-call, unused-ignore]
    return t.cast("_redis.Redis", client)


def sentinel_address(url: str) -> tuple[list[tuple[str, int]], str, dict[str, t.Any]]:
    """The Sentinels, the service, and the primary's ``db``, ``username`` and ``password``,
    of a ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`` URL.

    :raises ConfigError: if ``url`` does not have that shape.
    """
    from urllib.parse import unquote, urlsplit

    userinfo, _, rest = url.removeprefix(SENTINEL_SCHEME).rpartition("@")
    hosts, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    try:
        addresses = [urlsplit(f"//{host}") for host in hosts.split(",")]
        sentinels = [(each.hostname or "", each.port or _SENTINEL_PORT) for each in addresses]
    except ValueError:
        sentinels = []
    bad_db = db != "" and not db.isdigit()
    if not sentinels or not all(host for host, _ in sentinels) or not service or bad_db:
        shape = f"{SENTINEL_SCHEME}[[user]:password@]host[:port][,host[:port]...]/service_name[/db]"
        raise ConfigError(f"SSE_BROKER_URL must be {shape}, got {mask_url(url)!r}")
    username, _, password = userinfo.partition(":")
    primary = {
        "db": int(db or 0),
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    return sentinels, unquote(service), primary


@functools.cache
def blocking_sentinel_pool() -> type:
    """redis-py's Sentinel pool, made blocking as the plain one is: a publish beyond the pool
    size waits for a connection rather than failing."""
    import redis
    from redis.sentinel import SentinelConnectionPool

    bases = (SentinelConnectionPool, redis.BlockingConnectionPool)
    return type("BlockingSentinelConnectionPool", bases, {})


def mask_url(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"//[^@/]*@", "//***@", url)
