"""The Redis broker: one Redis stream holds the history of every channel, shared by every
worker and host.

Cost is per process, not per client: one reader connection follows the stream with
``XREAD BLOCK`` and fans each entry out locally to this process's subscriptions, and a
small bounded pool serves publishes and replays. (flask-sse opens a pub/sub connection per
browser instead, and runs out of connections at scale.)

The stream's layout, its scripts and its ids are in :mod:`.redis_stream`: an id carries
the *epoch*, drawn afresh when Redis has lost data or is not the Redis that wrote it (a
restart, a failover), so that a resume from before is answered with ``event: missed``.
Behind Sentinel (:mod:`.redis_connect`) the pool and the reader follow a failover.

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
import contextlib
import functools
import logging
import math
import os
import secrets
import threading
import time
import typing as t

from ..errors import BrokerUnavailable, NotReplicated
from ..metrics import metrics
from .fanout import End, Fanout, Subscription
from .redis_connect import connect, mask_url
from .redis_stream import (
    CANCEL,
    EPOCH_KEY,
    HISTORY,
    JOB_KEY,
    LAST_KEY,
    PUBLISH,
    PUBLISH_JOB,
    REPLICATION_KEY,
    RUNNING_JOB_SECONDS,
    STREAM_KEY,
    Entry,
    Position,
    Replay,
    as_text,
    entry_frame,
    entry_frames,
    format_id,
    missed_frame,
    parse_id,
    position_before,
    predecessor,
    range_after,
)
from .shared import SharedReads

if t.TYPE_CHECKING:
    import redis as _redis

__all__ = ["RedisBroker"]

log = logging.getLogger("sse_flask")

_MIN_RETAINED = 100
_BLOCK_MS = 1000
#: Deliveries the reader remembers (and entries it looks through) to go on after a stream
#: that went back.
_REMEMBERED = 500
_POOL_SIZE = 8
#: Milliseconds a publish waits for ``SSE_REDIS_WAIT_REPLICAS`` replicas to confirm it.
_WAIT_MS = 1000


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

    def __init__(
        self, url: str, *, history: int, job_retention: float = 300, wait_replicas: int = 0
    ) -> None:
        try:
            import redis  # noqa: F401 (a missing extra fails here, naming its fix)
        except ImportError:
            raise RuntimeError(
                "SSE_BROKER_URL names Redis, which needs: pip install 'sse-flask[redis]'"
            ) from None
        self.url = url
        self.published = 0
        self._maxlen = max(history, _MIN_RETAINED)
        self._fanout = Fanout()
        self._cursor: Position | None = None
        #: The reader's last deliveries, to find where to go on after a stream that went back.
        self._delivered: collections.deque[Position] = collections.deque(maxlen=_REMEMBERED)
        self._reader_pid: int | None = None
        #: History reads that the streams resuming together share (a reconnect storm).
        self._histories: SharedReads[Replay] = SharedReads()
        self._ranges: SharedReads[list[Entry]] = SharedReads()
        self._closing = False
        self._wait_replicas = wait_replicas
        #: For the epoch script: whether every publish of ours waits for a replica.
        self._replicated = "1" if wait_replicas else "0"
        self._redis = connect(url, pool_size=_POOL_SIZE, socket_connect_timeout=2, socket_timeout=5)
        self._publish = self._redis.register_script(PUBLISH)
        self._history = self._redis.register_script(HISTORY)
        self._publish_job = self._redis.register_script(PUBLISH_JOB)
        self._job_seconds = max(1, math.ceil(job_retention))
        #: What cancels each job running in this process, by channel.
        self._cancels: dict[str, t.Callable[[], None]] = {}
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
        event_id = self._append(self._publish, [], [channel, frame], "publish to")
        self.published += 1
        return event_id

    def _append(
        self,
        script: t.Any,
        keys: list[str],
        args: list[str | int | bytes],
        what: str,
    ) -> str:
        """Run ``script`` (:data:`PUBLISH` or :data:`PUBLISH_JOB`) with the epoch's keys and
        arguments before ``keys`` and ``args``; return the event's id, once
        ``SSE_REDIS_WAIT_REPLICAS`` replicas have it.

        :raises BrokerUnavailable: if Redis cannot be reached: nothing was sent.
        :raises NotReplicated: if the replicas did not confirm it in time.
        """
        keys = [STREAM_KEY, EPOCH_KEY, LAST_KEY, REPLICATION_KEY, *keys]
        args = [secrets.token_hex(4), self._replicated, self._maxlen, *args]
        with self._reaching(what):
            if not self._wait_replicas:
                epoch, stream_id = script(keys=keys, args=args)
            else:
                # WAIT counts the writes of its own connection: one pipeline, one connection.
                with self._redis.pipeline(transaction=False) as pipe:
                    script(keys=keys, args=args, client=pipe)
                    pipe.wait(self._wait_replicas, _WAIT_MS)
                    (epoch, stream_id), replicas = pipe.execute()
        event_id = f"{epoch.decode()}-{stream_id.decode()}"
        if self._wait_replicas and replicas < self._wait_replicas:
            where = f"Redis at {self._safe_url()}"
            raise NotReplicated(event_id, where, replicas, self._wait_replicas, _WAIT_MS)
        return event_id

    def subscribe(
        self, channels: t.Sequence[str], last_event_id: str | None, *, queue_size: int
    ) -> Subscription:
        """Subscribe, replaying from Redis what followed ``last_event_id``.

        The history is read first, up to the stream's last entry L at that moment; then the
        subscription is registered at the reader's position C, under the lock the reader
        delivers under. If the reader is behind L, live entries up to L are skipped (the
        replay has them); if it is ahead, the entries in (L, C] are read too (they were
        delivered before the subscription existed). So none is lost or doubled.

        Streams that resume from the same id while its history is being read share that
        read (:class:`~sse_flask.broker.shared.SharedReads`), and its frames.
        """
        self._start_reader()
        replay = None
        if last_event_id is not None and not self._fanout.closed:
            read = functools.partial(self._history_after, last_event_id)
            replay = self._histories.read(last_event_id, read)
        return self._register(channels, queue_size, replay)

    def open_job(self, channel: str, on_cancel: t.Callable[[], None]) -> None:
        """Mark the job ``channel`` running in Redis; this process's reader calls
        ``on_cancel`` when any process cancels it."""
        import redis

        self._start_reader()
        self._cancels[channel] = on_cancel
        try:
            self._redis.set(JOB_KEY + channel + ":state", "running", ex=RUNNING_JOB_SECONDS)
        except redis.RedisError as e:
            del self._cancels[channel]
            raise BrokerUnavailable(
                f"cannot start a job in Redis at {self._safe_url()}: {e}"
            ) from e

    def publish_job(self, channel: str, frame: bytes, *, last: bool = False) -> str:
        """Append ``frame`` to the main stream and to the job's own; after the ``last``
        one the job's keys expire ``SSE_JOB_RETENTION`` seconds later."""
        if last:
            self._cancels.pop(channel, None)
        ttl = self._job_seconds if last else RUNNING_JOB_SECONDS
        event_id = self._append(
            self._publish_job,
            [JOB_KEY + channel, JOB_KEY + channel + ":state"],
            [channel, frame, "1" if last else "", ttl],
            "publish to",
        )
        self.published += 1
        return event_id

    def subscribe_job(
        self, channel: str, last_event_id: str | None, *, queue_size: int
    ) -> Subscription | None:
        """Subscribe to the job ``channel``, replaying its own stream (read with the main
        stream's last position in one snapshot, then registered as :meth:`subscribe` does)."""
        self._start_reader()
        if self._fanout.closed:
            return self._register([channel], queue_size, None)
        with self._reaching("read the job from"), self._redis.pipeline(transaction=True) as pipe:
            pipe.get(JOB_KEY + channel + ":state")
            pipe.set(EPOCH_KEY, secrets.token_hex(4), nx=True, get=True)
            pipe.xrange(JOB_KEY + channel, "-", "+")
            pipe.xinfo_stream(STREAM_KEY)
            state, epoch, entries, info = pipe.execute()
        if state is None:
            return None
        upto = parse_id(as_text(info["last-generated-id"])) or (0, 0)
        entries = t.cast("list[Entry]", entries)
        missed = None
        if last_event_id is not None:
            given_epoch, _, stream_id = last_event_id.partition("-")
            known = epoch is not None and given_epoch == epoch.decode()
            after = parse_id(stream_id) if known else None
            if after is None:
                first = parse_id(entries[0][0].decode()) if entries else None
                resume = position_before(first) if first else upto
                missed = missed_frame(last_event_id, as_text(epoch or b""), first, resume)
            else:
                entries = [
                    entry for entry in entries if (parse_id(entry[0].decode()) or (0, 0)) > after
                ]
        subscription = self._register([channel], queue_size, Replay(missed, entries, upto))
        # The replay has the job's last event if it ended before the reader delivered it here.
        name = channel.encode()
        ended = any(b"x" in fields and fields[b"c"] == name for _, fields in entries)
        if state == b"ended" or ended:
            subscription.close(End.JOB_ENDED)
        return subscription

    def cancel_job(self, channel: str) -> None:
        """Append an entry to the main stream that tells every worker's reader to cancel
        the job ``channel``; the one running it does."""
        self._append(self._publish, [], [CANCEL, channel], "cancel a job through")

    def _register(
        self, channels: t.Sequence[str], queue_size: int, replay: Replay | None
    ) -> Subscription:
        """Register a subscription that resumes with ``replay``, read up to its ``upto``:
        the entries the reader delivered beyond ``upto`` before it was registered are added
        to the replay, and those it has yet to deliver up to ``upto`` are skipped."""
        frames = replay.frames(channels) if replay is not None else []
        upto = replay.upto if replay is not None else None
        missed = replay is not None and replay.missed is not None
        with self._fanout.lock:
            if self._cursor is None and upto is not None:
                # The reader has no position yet (Redis was down when it started) and has
                # delivered nothing: it starts after what this replay covers.
                self._cursor = upto
            cursor = self._cursor
            skip = upto if upto is not None and cursor is not None and cursor < upto else None
            subscription = self._fanout.subscribe(
                channels, queue_size, replay=frames, missed=missed, skip_until=skip
            )
        if upto is not None and cursor is not None and cursor > upto:
            span = (range_after(upto), format_id(cursor))
            try:
                delivered = self._ranges.read(span, functools.partial(self._entries, *span))
            except BrokerUnavailable:
                subscription.close()
                raise
            subscription.extend_replay(entry_frames(delivered, set(channels)))
        return subscription

    def stats(self) -> dict[str, t.Any]:
        return self._fanout.stats(backend=self.name, published=self.published)

    def ping(self) -> None:

        with self._reaching("reach"):
            self._redis.ping()

    def stop_publishing(self) -> None:
        """Nothing to refuse: what is published goes to Redis, where the next workers read it."""

    def close(self) -> None:
        """End every subscription; the reader stops within one ``XREAD`` block."""
        self._closing = True
        self._fanout.close_all()
        self._redis.connection_pool.disconnect()

    def _history_after(self, last_event_id: str) -> Replay:
        """The replay after ``last_event_id``: a ``missed`` frame if that id is unknown or
        trimmed away (``None`` if not), the retained entries after it (all of them after a
        ``missed``), and the stream's last position they cover.

        An id is *held* only if this stream issued it and nothing after it is gone: it is
        still retained, or it is the predecessor of the first retained entry after it, or
        it is the last id generated; and no entry after it was deleted. Any
        other id (trimmed further back, never issued here, from a primary that failed over
        before replicating it) gets ``missed``: Redis cannot vouch for what followed it.
        """
        epoch, _, stream_id = last_event_id.partition("-")
        after = parse_id(stream_id)
        with self._reaching("read the history from"):
            answer = self._history(
                keys=[STREAM_KEY, EPOCH_KEY, LAST_KEY, REPLICATION_KEY],
                args=[secrets.token_hex(4), self._replicated, format_id(after) if after else ""],
            )
        current_epoch = answer[0].decode()
        last = parse_id(answer[1].decode()) or (0, 0)
        deleted = parse_id(answer[2].decode()) or (0, 0)
        if epoch == current_epoch and after is not None and deleted <= after:
            held = [(entry, dict(zip(fields[::2], fields[1::2]))) for entry, fields in answer[3]]
            if held and parse_id(held[0][0].decode()) == after:
                return Replay(None, held[1:], last)
            if (held and predecessor(held[0]) == after) or (not held and after == last):
                return Replay(None, held, last)
        # Entries kept from an earlier epoch (a Redis restarted with its data) go out under
        # the current one: a client resuming from one of them later is then held, instead of
        # being told ``missed`` again at every reconnect until a new event arrives.
        relabel = current_epoch.encode()
        entries = [
            (stream_id, {**fields, b"e": relabel})
            for stream_id, fields in self._entries("-", format_id(last))
        ]
        first = parse_id(entries[0][0].decode()) if entries else None
        # Resuming after the notice replays everything retained now: with none, the last
        # position; else the predecessor of the first entry, held by the rule above.
        resume = predecessor(entries[0]) if entries else last
        return Replay(missed_frame(last_event_id, current_epoch, first, resume), entries, last)

    def _entries(self, start: str, end: str) -> list[Entry]:

        with self._reaching("read the history from"):
            return t.cast("list[Entry]", self._redis.xrange(STREAM_KEY, start, end))

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
        self._reader = connect(
            self.url, pool_size=None, socket_connect_timeout=2, socket_timeout=_BLOCK_MS / 1000 + 5
        )
        with contextlib.suppress(redis.RedisError):  # the reader finds the end once Redis answers
            self._follow_from_end()
        threading.Thread(target=self._read, name="sse-flask redis reader", daemon=True).start()

    def _read(self) -> None:
        """Follow the stream and deliver each entry, reconnecting with backoff on errors
        and resuming after the last entry read, so that nothing Redis accepted is missed."""
        import redis

        assert self._reader is not None
        backoff = 0.05
        while not self._closing:
            try:
                cursor = self._cursor if self._cursor is not None else self._follow_from_end()
                response = self._reader.xread(
                    {STREAM_KEY: format_id(cursor)}, count=500, block=_BLOCK_MS
                )
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
            for _, entries in t.cast(
                "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", response or []
            ):
                for stream_id, fields in entries:
                    with self._fanout.lock:
                        started = time.perf_counter()
                        position = parse_id(stream_id.decode()) or (0, 0)
                        self._cursor = position
                        self._delivered.append(position)
                        self._fanout.deliver(
                            fields[b"c"].decode(), entry_frame(stream_id, fields), position
                        )
                    fanout_seconds.observe(time.perf_counter() - started)
                    if b"x" in fields or fields[b"c"] == CANCEL.encode():
                        self._job_entry(fields)
        self._reader.close()

    def _follow_from_end(self) -> Position:
        """Have the reader start after the stream's last entry, unless a subscription set
        where it starts meanwhile: reading the end lets other greenlets run, and a
        subscription registered then expects the reader to go on from what it replayed.
        Returns where the reader starts."""
        last = self._last_generated()
        with self._fanout.lock:
            if self._cursor is None:
                self._cursor = last
            return self._cursor

    def _job_entry(self, fields: dict[bytes, bytes]) -> None:
        """A job's last event (its streams end) or a request to cancel one (the process
        running it cancels it)."""
        if fields[b"c"] == CANCEL.encode():
            on_cancel = self._cancels.get(fields[b"f"].decode())
            if on_cancel is not None:
                on_cancel()
        else:
            with self._fanout.lock:
                self._fanout.end_channel(fields[b"c"].decode(), End.JOB_ENDED)

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
        ids = [entry_id for entry_id, _ in t.cast("list[Entry]", newest)]
        positions = [parse_id(entry_id.decode()) or (0, 0) for entry_id in ids]
        rewound = next((p for p in positions if p in delivered), None)
        if rewound is None:
            rewound = position_before(positions[-1]) if len(positions) > _REMEMBERED else (0, 0)
        with self._fanout.lock:
            self._cursor = rewound

    def _last_generated(self) -> Position:
        import redis

        try:
            info = self._reader.xinfo_stream(STREAM_KEY) if self._reader else {}
        except redis.ResponseError:
            return (0, 0)
        return parse_id(as_text(info["last-generated-id"])) or (0, 0)

    def _safe_url(self) -> str:
        """The URL without its password, for messages."""
        return mask_url(self.url)

    @contextlib.contextmanager
    def _reaching(self, what: str) -> t.Iterator[None]:
        """Raise :class:`BrokerUnavailable` for a Redis error, saying what could not be done."""
        import redis

        try:
            yield
        except redis.RedisError as e:
            raise BrokerUnavailable(f"cannot {what} Redis at {self._safe_url()}: {e}") from e
