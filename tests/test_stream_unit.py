"""One client's stream, :class:`sse_flask.stream.EventStream`, driven directly: a real
in-process broker, plain threads, and a WSGI environ without a socket (no gevent).

Contract lines pinned: "The stream opens with `retry: <SSE_RETRY_MS>`", resume ("replays ...
then continues live"), "While idle, a comment line (`:` …) goes out at least every
`SSE_HEARTBEAT` seconds", `SSE_MAX_STREAM_SECONDS` ("close each stream after this lifetime,
with jitter"), and "A client that goes away is removed from the registry".
"""

from __future__ import annotations

import threading
import time
import typing as t

import pytest

from sse_flask.broker import MemoryBroker
from sse_flask.events import Event, encode_comment, encode_event, encode_retry
from sse_flask.stream import EventStream

HEARTBEAT = encode_comment("heartbeat")


class Closes:
    """An ``on_close`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def broker() -> t.Iterator[MemoryBroker]:
    broker = MemoryBroker(history=1000)
    yield broker
    broker.close()


def open_stream(
    broker: MemoryBroker,
    *,
    last_event_id: str | None = None,
    heartbeat: float = 30.0,
    retry_ms: int = 3000,
    lifetime: float = 0.0,
    on_close: t.Callable[[], None] | None = None,
    queue_size: int = 100,
) -> EventStream:
    subscription = broker.subscribe(["a"], last_event_id, queue_size=queue_size)
    return EventStream(
        subscription,
        heartbeat=heartbeat,
        retry_ms=retry_ms,
        lifetime=lifetime,
        environ={"REQUEST_METHOD": "GET", "PATH_INFO": "/events"},
        on_close=on_close or Closes(),
    )


def publish(broker: MemoryBroker, data: str) -> bytes:
    """Publish ``data`` on channel ``a``; return the frame a subscriber receives."""
    event_id = broker.publish("a", encode_event(Event(data=data)))
    return encode_event(Event(data=data, id=event_id))


def test_opens_with_retry(broker: MemoryBroker) -> None:
    """The first chunk is ``retry: N`` alone when there is nothing to replay."""
    stream = open_stream(broker, retry_ms=1234)
    assert next(iter(stream)) == b"retry: 1234\n"
    stream.close()


def test_first_chunk_is_retry_and_replay(broker: MemoryBroker) -> None:
    """Resuming, the first chunk is ``retry:`` followed by every replayed frame."""
    first = broker.publish("a", encode_event(Event(data="seen")))
    frames = [publish(broker, f"missed {i}") for i in range(3)]
    stream = open_stream(broker, last_event_id=first, retry_ms=500)
    assert next(iter(stream)) == encode_retry(500) + b"".join(frames)
    stream.close()


def test_long_replay_comes_in_bounded_chunks(broker: MemoryBroker) -> None:
    """A large replay is written in several chunks, none huge, together exactly retry + replay."""
    first = broker.publish("a", encode_event(Event(data="seen")))
    frames = [publish(broker, f"{i:04d}" + "x" * 2000) for i in range(400)]  # about 800 KB
    stream = open_stream(broker, last_event_id=first, retry_ms=10, queue_size=1000)
    chunks: list[bytes] = []
    iterator = iter(stream)
    while sum(map(len, chunks)) < len(encode_retry(10) + b"".join(frames)):
        chunks.append(next(iterator))
    assert b"".join(chunks) == encode_retry(10) + b"".join(frames)
    assert len(chunks) >= 3 and max(len(chunk) for chunk in chunks) < 600_000
    stream.close()


def test_then_continues_live(broker: MemoryBroker) -> None:
    """After the opening chunk, each published event comes through as it is."""
    stream = open_stream(broker)
    iterator = iter(stream)
    next(iterator)
    expected = publish(broker, "live")
    assert next(iterator) == expected
    stream.close()


def test_pending_frames_drained_into_one_chunk(broker: MemoryBroker) -> None:
    """Events that arrived while the stream was busy go out together, as one chunk."""
    stream = open_stream(broker)
    iterator = iter(stream)
    next(iterator)
    frames = [publish(broker, str(i)) for i in range(5)]
    assert next(iterator) == b"".join(frames)
    stream.close()


def test_heartbeat_while_idle(broker: MemoryBroker) -> None:
    """An idle stream sends a comment every heartbeat interval, not sooner and not much later."""
    stream = open_stream(broker, heartbeat=0.05)
    iterator = iter(stream)
    next(iterator)
    previous = time.monotonic()
    for _ in range(4):
        assert next(iterator) == HEARTBEAT
        now = time.monotonic()
        assert 0.045 <= now - previous < 1.0
        previous = now
    stream.close()


def test_heartbeat_counts_from_the_last_write(broker: MemoryBroker) -> None:
    """An event resets the idle clock: the next heartbeat is a full interval after it."""
    stream = open_stream(broker, heartbeat=0.4)
    iterator = iter(stream)
    next(iterator)
    published: list[bytes] = []
    # The event arrives in the middle of an idle interval; when exactly does not matter.
    timer = threading.Timer(0.1, lambda: published.append(publish(broker, "x")))
    timer.start()
    event = next(iterator)
    event_at = time.monotonic()
    beat = next(iterator)
    beat_at = time.monotonic()
    timer.join()
    assert (event, beat) == (published[0], HEARTBEAT)
    assert 0.39 <= beat_at - event_at < 1.5
    stream.close()


def test_ends_when_subscription_closed(broker: MemoryBroker) -> None:
    """Closing the subscription (here, the broker shutting down) ends a waiting stream at once."""
    stream = open_stream(broker, heartbeat=30)
    iterator = iter(stream)
    next(iterator)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iterator))
    reader.start()
    started = time.monotonic()
    broker.close()
    reader.join(5)
    assert not reader.is_alive() and chunks == [] and time.monotonic() - started < 5
    stream.close()


def test_frames_pending_at_close_are_written_first(broker: MemoryBroker) -> None:
    """Frames delivered before the subscription ended still go out; then the stream ends."""
    stream = open_stream(broker)
    iterator = iter(stream)
    next(iterator)
    frames = [publish(broker, str(i)) for i in range(3)]
    broker.close()
    assert list(iterator) == [b"".join(frames)]
    stream.close()


def test_slow_consumer_stream_ends(broker: MemoryBroker) -> None:
    """A stream cut off for falling queue_size behind ends without writing what it missed."""
    stream = open_stream(broker, queue_size=2)
    iterator = iter(stream)
    next(iterator)
    for i in range(3):
        publish(broker, str(i))
    assert list(iterator) == []
    assert broker.stats()["dropped"] == 1
    stream.close()


def test_lifetime(broker: MemoryBroker) -> None:
    """With a lifetime, each stream ends between 0.9 and 1.0 times it, heartbeats or not, and
    not all at the same time (jitter), so that their clients do not reconnect at once."""
    lifetime = 1.0
    heartbeats = [0.05, 30] * 4
    streams = [open_stream(broker, lifetime=lifetime, heartbeat=beat) for beat in heartbeats]
    ended: list[float] = [0.0] * len(streams)

    def run(index: int) -> None:
        for _ in streams[index]:
            pass
        ended[index] = time.monotonic() - started

    readers = [threading.Thread(target=run, args=(i,)) for i in range(len(streams))]
    started = time.monotonic()
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(lifetime + 5)
    for index, took in enumerate(ended):
        assert 0.9 * lifetime - 0.01 <= took <= lifetime + 0.3, (
            f"stream {index} lasted {took:.3f} s"
        )
        streams[index].close()
    # Eight lifetimes drawn from a range of 0.1 s all fall within 0.02 s of each other
    # about once in 10,000 runs; lifetimes without jitter always do, barring a stall.
    spread = max(ended) - min(ended)
    assert spread >= 0.02 * lifetime, f"the streams ended together: {sorted(ended)}"


def test_no_lifetime_by_default(broker: MemoryBroker) -> None:
    """lifetime=0 means the stream is not closed for age."""
    stream = open_stream(broker, heartbeat=0.02, lifetime=0)
    iterator = iter(stream)
    next(iterator)
    for _ in range(5):
        assert next(iterator) == HEARTBEAT
    stream.close()


def test_close_never_iterated(broker: MemoryBroker) -> None:
    """close() of a stream never iterated calls on_close once and unsubscribes (PEP 3333 close)."""
    closes = Closes()
    stream = open_stream(broker, on_close=closes)
    assert broker.stats()["consumers"] == 1
    stream.close()
    stream.close()
    assert closes.calls == 1
    assert broker.stats()["consumers"] == 0 and broker.stats()["channels"] == {}


def test_close_while_iterating(broker: MemoryBroker) -> None:
    """close() of a stream mid-way calls on_close once, unsubscribes, and nothing more is read."""
    closes = Closes()
    stream = open_stream(broker, on_close=closes)
    iterator = iter(stream)
    next(iterator)
    publish(broker, "x")
    next(iterator)
    stream.close()
    stream.close()
    assert closes.calls == 1
    assert broker.stats()["consumers"] == 0
    publish(broker, "after close")
    assert list(iterator) == []


def test_close_after_the_end(broker: MemoryBroker) -> None:
    """A stream that ended by itself still gets close(), which calls on_close once."""
    closes = Closes()
    stream = open_stream(broker, on_close=closes, lifetime=0.05)
    assert list(stream) == [encode_retry(3000)]
    assert closes.calls == 0, "on_close belongs to close(), which the server calls"
    stream.close()
    assert closes.calls == 1
    assert broker.stats()["consumers"] == 0
