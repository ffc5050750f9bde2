"""The Redis broker: one Redis stream holds the history of every channel, shared by every
worker and host.

Cost is per process, not per client: one reader connection follows the stream with
``XREAD BLOCK`` and fans each entry out locally to this process's subscriptions, and a
small bounded pool serves publishes and replays. (flask-sse opens a pub/sub connection per
browser instead, and runs out of connections at scale.)

Each entry holds its channel, its frame encoded once without an id, the id written before
it, and the *epoch*: a token stored in Redis beside the stream, drawn afresh when Redis has
lost it or is not the Redis that wrote it (a restart, a failover: see ``_EPOCH``). Event ids
are ``<epoch>-<stream id>``, so an id from a Redis that may since have lost data is
recognised as unknown and answered with ``event: missed``.

Behind Sentinel (``redis+sentinel://``), each new connection asks the Sentinels for the
primary, so the pool and the reader follow a failover as they reconnect.

Deliberate divergences:

- The stream is trimmed with an approximate ``MAXLEN`` (cheap for Redis), never below 100
  entries so that a reader briefly behind does not lose live events; so somewhat more than
  ``SSE_HISTORY`` events may be retained, and replayed.
- Needs Redis 7 or later, for ``XINFO STREAM``'s ``max-deleted-entry-id``, which tells
  whether an entry after a resumed id was removed with ``XDEL``. Trimming does not move it:
  each entry records instead the id generated just before it, so that a trimmed id is held
  only if it directly precedes the oldest retained entry. Redis keeps only the greatest id
  ever deleted, so after an ``XDEL`` every resume from before that id is told ``missed``.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import re
import secrets
import threading
import time
import typing as t

from ..errors import BrokerUnavailable, ConfigError, NotReplicated
from ..events import Event, encode_event, prefix_id
from ..metrics import metrics
from .fanout import Fanout, Subscription

if t.TYPE_CHECKING:
    import redis as _redis

__all__ = ["RedisBroker"]

log = logging.getLogger("sse_flask")

STREAM_KEY = "sse_flask:events"
EPOCH_KEY = "sse_flask:epoch"
LAST_KEY = "sse_flask:last"
REPLICATION_KEY = "sse_flask:replid"
_MIN_RETAINED = 100
_BLOCK_MS = 1000
#: Deliveries the reader remembers (and entries it looks through) to go on after a stream
#: that went back.
_REMEMBERED = 500
_POOL_SIZE = 8
#: Milliseconds a publish waits for ``SSE_REDIS_WAIT_REPLICAS`` replicas to confirm it.
_WAIT_MS = 1000
SENTINEL_SCHEME = "redis+sentinel://"
_SENTINEL_PORT = 26379
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1  # both parts of a stream id are unsigned 64-bit

# The epoch, made afresh (from ARGV[1]) when Redis has none, or when Redis is not the one
# that wrote it: its replication id differs from the one stored beside it, as after a
# restart or a failover to a replica, either of which may have lost entries it had
# acknowledged (a primary's last writes, not yet replicated nor on disk). Every id from
# before is then unknown, and a resume from it is told ``missed``: Redis cannot vouch for
# what followed. One exception, with ARGV[2] '1' (every publish waits for a replica): a
# replica promoted in a failover (its previous replication id, master_replid2, is the
# writer's) holds every acknowledged entry, and the epoch is kept.
# KEYS[2]: the epoch; KEYS[4]: the replication id that wrote it.
_EPOCH = """
local replication = redis.call('INFO', 'replication')
local replid = string.match(replication, 'master_replid:(%x+)') or ''
local promoted_from = string.match(replication, 'master_replid2:(%x+)') or ''
local epoch = redis.call('GET', KEYS[2])
local writer = redis.call('GET', KEYS[4])
if not epoch or writer ~= replid and not (ARGV[2] == '1' and writer == promoted_from) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
if writer ~= replid then
  redis.call('SET', KEYS[4], replid)
end
"""

# Get or make the epoch, and append, in one step: no publish can slip between a Redis
# restart and the new epoch. Each entry also records ``p``, the id generated just before it
# (kept in LAST_KEY, replicated with the entry), so that a resume can tell an id this stream
# really issued, with nothing after it gone, from one it never held. A stream that exists
# without LAST_KEY (written by an older version) gets an empty ``p``: a resume from just
# before that entry is then held only within its millisecond (see ``_predecessor``), else
# answered with ``missed``, the safe side.
_PUBLISH = _EPOCH + """
local previous = redis.call('GET', KEYS[3])
if not previous then
  previous = redis.call('EXISTS', KEYS[1]) == 1 and '' or '0-0'
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*',
  'c', ARGV[4], 'e', epoch, 'p', previous, 'f', ARGV[5])
redis.call('SET', KEYS[3], id)
return {epoch, id}
"""

# One snapshot for a resume from ARGV[3] (a stream id, or '' for none): the epoch, the last
# id generated, the greatest id deleted, and the entries from ARGV[3] on.
_HISTORY = _EPOCH + """
local last, deleted, entries = '0-0', '0-0', {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
    if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
  end
  if ARGV[3] ~= '' then entries = redis.call('XRANGE', KEYS[1], ARGV[3], '+') end
end
return {epoch, last, deleted, entries}
"""

Position = tuple[int, int]
#: One entry of the stream as redis-py returns it: (stream id, fields).
_Entry = tuple[bytes, dict[bytes, bytes]]


class RedisBroker:
    """Publish through Redis and fan out to this process's streams.

    :param url: a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, as redis-py reads
        them; or ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``,
        which asks those Sentinels for the primary of ``service`` and follows it when it
        fails over (the password is the primary's; a port defaults to 26379).
    :param history: events to retain for ``Last-Event-ID`` resume.
    :param wait_replicas: with more than 0, a publish returns only once that many replicas
        have the event (``WAIT``), so that it survives a failover; else it raises
        :class:`~sse_flask.errors.NotReplicated` after a second.
    :raises ConfigError: if a ``redis+sentinel://`` URL does not have that shape.
    """

    name = "redis"

    def __init__(self, url: str, *, history: int, wait_replicas: int = 0) -> None:
        try:
            import redis
        except ImportError:
            raise RuntimeError("SSE_BROKER_URL names Redis, which needs: pip install 'sse-flask[redis]'") from None
        self.url = url
        self.published = 0
        self._maxlen = max(history, _MIN_RETAINED)
        self._fanout = Fanout()
        self._cursor: Position | None = None
        #: The reader's last deliveries, to find where to go on after a stream that went back.
        self._delivered: collections.deque[Position] = collections.deque(maxlen=_REMEMBERED)
        self._reader_pid: int | None = None
        self._closing = False
        self._wait_replicas = wait_replicas
        #: For the epoch script: whether every publish of ours waits for a replica.
        self._replicated = "1" if wait_replicas else "0"
        self._redis = _client(url, pool_size=_POOL_SIZE, socket_connect_timeout=2, socket_timeout=5)
        self._publish = self._redis.register_script(_PUBLISH)
        self._history = self._redis.register_script(_HISTORY)
        self._reader: _redis.Redis | None = None
        try:
            self.ping()
        except BrokerUnavailable as e:
            # Start all the same (Redis may come up after the app): publishes answer 503
            # and streams wait with heartbeats until it does; but say so now, not at the
            # first request.
            log.warning("%s; starting anyway: publishes answer 503 until it answers", e)

    def publish(self, channel: str, frame: bytes) -> str:
        """Append ``frame`` to the stream; every worker's reader delivers it."""
        import redis

        keys = [STREAM_KEY, EPOCH_KEY, LAST_KEY, REPLICATION_KEY]
        args: list[str | int | bytes] = [
            secrets.token_hex(4), self._replicated, self._maxlen, channel, frame
        ]
        try:
            if not self._wait_replicas:
                epoch, stream_id = self._publish(keys=keys, args=args)
            else:
                # WAIT counts the writes of its own connection: one pipeline, one connection.
                with self._redis.pipeline(transaction=False) as pipe:
                    self._publish(keys=keys, args=args, client=pipe)
                    pipe.wait(self._wait_replicas, _WAIT_MS)
                    (epoch, stream_id), replicas = pipe.execute()
        except redis.RedisError as e:
            raise BrokerUnavailable(f"cannot publish to Redis at {self._safe_url()}: {e}") from e
        self.published += 1
        event_id = f"{epoch.decode()}-{stream_id.decode()}"
        if self._wait_replicas and replicas < self._wait_replicas:
            raise NotReplicated(
                f"event {event_id} was written to Redis at {self._safe_url()}, but only"
                f" {replicas} of {self._wait_replicas} replicas (SSE_REDIS_WAIT_REPLICAS)"
                f" confirmed it within {_WAIT_MS} ms: it may have been delivered, and may be lost"
                " if Redis fails over"
            )
        return event_id

    def subscribe(self, channels: t.Sequence[str], last_event_id: str | None, *, queue_size: int) -> Subscription:
        """Subscribe, replaying from Redis what followed ``last_event_id``.

        The history is read first, up to the stream's last entry L at that moment; then the
        subscription is registered at the reader's position C, under the lock the reader
        delivers under. If the reader is behind L, live entries up to L are skipped (the
        replay has them); if it is ahead, the entries in (L, C] are read too (they were
        delivered before the subscription existed). So none is lost or doubled.
        """
        self._start_reader()
        missed: bytes | None = None
        replay: list[_Entry] = []
        upto = None
        if last_event_id is not None and not self._fanout.closed:
            missed, replay, upto = self._history_after(last_event_id)
        with self._fanout.lock:
            subscription = self._fanout.new(channels, queue_size)
            if self._cursor is None and upto is not None:
                # The reader has no position yet (Redis was down when it started) and has
                # delivered nothing: it starts after what this replay covers.
                self._cursor = upto
            cursor = self._cursor
            if upto is not None and cursor is not None and cursor < upto:
                subscription.skip_until = upto
        if upto is not None and cursor is not None and cursor > upto:
            try:
                replay.extend(self._entries(_after(upto), _format(cursor)))
            except BrokerUnavailable:
                subscription.close()
                raise
        wanted = set(subscription.channels)
        subscription.missed = missed is not None
        subscription.replay = ([missed] if missed else []) + [
            _frame(stream_id, fields) for stream_id, fields in replay if fields[b"c"].decode() in wanted
        ]
        return subscription

    def stats(self) -> dict[str, t.Any]:
        return self._fanout.stats(backend=self.name, published=self.published)

    def ping(self) -> None:
        import redis

        try:
            self._redis.ping()
        except redis.RedisError as e:
            raise BrokerUnavailable(f"cannot reach Redis at {self._safe_url()}: {e}") from e

    def close(self) -> None:
        """End every subscription; the reader stops within one ``XREAD`` block."""
        self._closing = True
        self._fanout.close_all()
        self._redis.connection_pool.disconnect()

    def _history_after(self, last_event_id: str) -> tuple[bytes | None, list[_Entry], Position]:
        """A ``missed`` frame if ``last_event_id`` is unknown or trimmed away (``None`` if
        not), the retained entries after it (all of them after a ``missed``), and the
        stream's last position they cover.

        An id is *held* only if this stream issued it and nothing after it is gone: it is
        still retained, or it is the predecessor of the first retained entry after it, or
        it is the last id generated; and no entry after it was deleted. Any
        other id (trimmed further back, never issued here, from a primary that failed over
        before replicating it) gets ``missed``: Redis cannot vouch for what followed it.
        """
        import redis

        epoch, _, stream_id = last_event_id.partition("-")
        after = _parse(stream_id)
        try:
            answer = self._history(
                keys=[STREAM_KEY, EPOCH_KEY, LAST_KEY, REPLICATION_KEY],
                args=[secrets.token_hex(4), self._replicated, _format(after) if after else ""],
            )
        except redis.RedisError as e:
            raise BrokerUnavailable(f"cannot read the history from Redis at {self._safe_url()}: {e}") from e
        current_epoch = answer[0].decode()
        last = _parse(answer[1].decode()) or (0, 0)
        deleted = _parse(answer[2].decode()) or (0, 0)
        if epoch == current_epoch and after is not None and deleted <= after:
            held = [(entry, dict(zip(fields[::2], fields[1::2]))) for entry, fields in answer[3]]
            if held and _parse(held[0][0].decode()) == after:
                return None, held[1:], last
            if held and _predecessor(held[0]) == after or not held and after == last:
                return None, held, last
        entries = self._entries("-", _format(last))
        first = _parse(entries[0][0].decode()) if entries else None
        missed = Event(
            data={"last_event_id": last_event_id, "oldest_retained": f"{current_epoch}-{_format(first)}" if first else None},
            event="missed",
            # Resuming after this id replays everything retained now: with none, the last
            # position; else the predecessor of the first entry, held by the rule above.
            id=f"{current_epoch}-{_format(_predecessor(entries[0]) if entries else last)}",
        )
        return encode_event(missed), entries, last

    def _entries(self, start: str, end: str) -> list[_Entry]:
        import redis

        try:
            return t.cast("list[_Entry]", self._redis.xrange(STREAM_KEY, start, end))
        except redis.RedisError as e:
            raise BrokerUnavailable(f"cannot read the history from Redis at {self._safe_url()}: {e}") from e

    def _start_reader(self) -> None:
        """Start this process's reader on first use (and again after a fork)."""
        pid = os.getpid()
        if self._reader_pid == pid:
            return
        with self._fanout.lock:
            if self._reader_pid == pid:
                return
            self._reader_pid = pid
        import redis

        # A client of its own, used by the reader alone: one connection, made on first use
        # (so that starting while Redis is down does not fail).
        self._reader = _client(
            self.url, pool_size=None, socket_connect_timeout=2, socket_timeout=_BLOCK_MS / 1000 + 5
        )
        try:
            self._cursor = self._last_generated()
        except redis.RedisError:
            self._cursor = None
        threading.Thread(target=self._read, name="sse-flask redis reader", daemon=True).start()

    def _read(self) -> None:
        """Follow the stream and deliver each entry, reconnecting with backoff on errors
        and resuming after the last entry read, so that nothing Redis accepted is missed."""
        import redis

        assert self._reader is not None
        backoff = 0.05
        while not self._closing:
            try:
                if self._cursor is None:
                    self._cursor = self._last_generated()
                response = self._reader.xread({STREAM_KEY: _format(self._cursor)}, count=500, block=_BLOCK_MS)
                if not response:
                    self._rewind()
            except redis.RedisError as e:
                if self._closing:
                    return
                if backoff == 0.05:
                    log.warning("lost Redis at %s (%s); reconnecting", self._safe_url(), e)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if backoff != 0.05:
                log.info("reconnected to Redis at %s", self._safe_url())
                backoff = 0.05
            fanout_seconds = metrics().fanout_seconds
            for _, entries in t.cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", response or []):
                for stream_id, fields in entries:
                    with self._fanout.lock:
                        started = time.perf_counter()
                        position = _parse(stream_id.decode()) or (0, 0)
                        self._cursor = position
                        self._delivered.append(position)
                        self._fanout.deliver(fields[b"c"].decode(), _frame(stream_id, fields), position)
                    fanout_seconds.observe(time.perf_counter() - started)
        self._reader.close()

    def _rewind(self) -> None:
        """Follow a stream that now ends before the last entry read.

        That is a Redis restarted (without persistence, or with its last writes lost) or a
        new primary that never had the newest entries; redis-py reconnects by itself, so
        neither need surface as an error. The new entries may have lower ids than what was
        read (a clock behind), and reading after the cursor would never reach them: the
        reader goes back to the newest entry it delivered that the stream still has, or,
        with none, to before the entries it has never delivered.
        """
        assert self._reader is not None and self._cursor is not None
        if self._last_generated() >= self._cursor:
            return
        delivered = set(self._delivered)
        newest = self._reader.xrevrange(STREAM_KEY, "+", "-", count=_REMEMBERED + 1)
        ids = [entry_id for entry_id, _ in t.cast("list[_Entry]", newest)]
        positions = [_parse(entry_id.decode()) or (0, 0) for entry_id in ids]
        rewound = next((p for p in positions if p in delivered), None)
        if rewound is None:
            rewound = _before(positions[-1]) if len(positions) > _REMEMBERED else (0, 0)
        with self._fanout.lock:
            self._cursor = rewound

    def _last_generated(self) -> Position:
        import redis

        try:
            info = self._reader.xinfo_stream(STREAM_KEY) if self._reader else {}
        except redis.ResponseError:
            return (0, 0)
        return _parse(_text(info["last-generated-id"])) or (0, 0)

    def _safe_url(self) -> str:
        """The URL without its password, for messages."""
        return _mask(self.url)


def _client(url: str, *, pool_size: int | None, **options: t.Any) -> _redis.Redis:
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

    sentinels, service, primary = _sentinel_address(url)
    timeouts = {"socket_connect_timeout": options["socket_connect_timeout"], "socket_timeout": 2}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs=timeouts, **timeouts
    )
    if pool_size is not None:
        options.update(
            connection_pool_class=_blocking_sentinel_pool(), max_connections=pool_size, timeout=5
        )
    client = sentinel.master_for(service, **primary, **options)  # type: ignore[no-untyped-call]
    return t.cast("_redis.Redis", client)


def _sentinel_address(url: str) -> tuple[list[tuple[str, int]], str, dict[str, t.Any]]:
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
        raise ConfigError(f"SSE_BROKER_URL must be {shape}, got {_mask(url)!r}")
    username, _, password = userinfo.partition(":")
    primary = {
        "db": int(db or 0),
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    return sentinels, unquote(service), primary


@functools.cache
def _blocking_sentinel_pool() -> type:
    """redis-py's Sentinel pool, made blocking as the plain one is: a publish beyond the pool
    size waits for a connection rather than failing."""
    import redis
    from redis.sentinel import SentinelConnectionPool

    bases = (SentinelConnectionPool, redis.BlockingConnectionPool)
    return type("BlockingSentinelConnectionPool", bases, {})


def _mask(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def _frame(stream_id: bytes, fields: dict[bytes, bytes]) -> bytes:
    return prefix_id(fields[b"f"], f"{fields[b'e'].decode()}-{stream_id.decode()}")


def _text(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(stream_id: str) -> Position | None:
    """The position of a Redis stream id, or ``None`` if it is not one Redis could issue."""
    match = _STREAM_ID.fullmatch(stream_id)
    if not match or int(match[1]) > _MAX_PART or int(match[2]) > _MAX_PART:
        return None
    return (int(match[1]), int(match[2]))


def _after(position: Position) -> str:
    """An XRANGE start just after ``position`` (Redis refuses an exclusive start at the
    largest sequence of a millisecond, which ``_before`` produces)."""
    milliseconds, sequence = position
    return f"{milliseconds + 1}-0" if sequence == _MAX_PART else f"({milliseconds}-{sequence}"


def _format(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


def _predecessor(entry: _Entry) -> Position:
    """The id generated just before ``entry``: its ``p``; for an entry written without one,
    the greatest id below it (which Redis issued only if it is in the same millisecond, and
    then just before it)."""
    previous = _parse(_text(entry[1].get(b"p", b"")))
    return previous if previous is not None else _before(_parse(entry[0].decode()) or (0, 1))


def _before(position: Position) -> Position:
    """The greatest stream id below ``position``."""
    milliseconds, sequence = position
    return (milliseconds, sequence - 1) if sequence else (milliseconds - 1, _MAX_PART)
