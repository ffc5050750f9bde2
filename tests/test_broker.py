"""Brokers, through the :class:`sse_flask.broker.Broker` protocol only: ids, fan-out,
replay, ``missed``, slow consumers, stats and thread safety.

One body for every broker: the ``make_broker`` fixture is parametrised by backend (add
``"redis"`` to its params and a branch to build one). Nothing here reaches past the protocol:
``publish``, ``subscribe`` (``replay``, ``wait``, ``close``, ``closed``), ``stats``, ``ping``
and ``close``. Live delivery is awaited with a deadline, never assumed synchronous.

Contract lines pinned: "Every event carries `id:` ... strictly increasing in the broker's
order", "Resume: ... replays, in order, every retained event after that id on the requested
channels, then continues live: no duplicates, no gaps", "`event: missed` with JSON data
`{"last_event_id": ..., "oldest_retained": ...}` ... then replays everything retained", "a
restarted in-process broker must not hand out ids that an old client mistakes for ones it
already has", "A client that falls `SSE_QUEUE_SIZE` events behind is cut off (counted in
`dropped`) ... One slow reader never delays the others", and `/stats`' figures.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import typing as t

import pytest
from helpers.wait import wait_until
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from sse_flask.broker import Broker, MemoryBroker, Subscription
from sse_flask.broker.fanout import End
from sse_flask.broker.redis import RedisBroker
from sse_flask.broker.redis_stream import STREAM_KEY
from sse_flask.events import Event, encode_event


class Parsed(t.NamedTuple):
    id: str
    event: str
    data: str


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_broker(request: pytest.FixtureRequest) -> t.Iterator[t.Callable[..., Broker]]:
    """A factory of brokers of one backend: ``make_broker(history=...)``; closed at teardown.

    Each Redis broker gets a database of its own on one redis-server, so that, like two
    in-process brokers, two of them share no history.
    """
    brokers: list[Broker] = []
    redis_url = ""
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server").url.rpartition("/")[0]

    def make(*, history: int = 1000) -> Broker:
        if request.param == "memory":
            broker: Broker = MemoryBroker(history=history)
        else:
            broker = RedisBroker(f"{redis_url}/{len(brokers)}", history=history)
        brokers.append(broker)
        return broker

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for broker in brokers:
        broker.close()


def exact_history(make_broker: t.Callable[..., Broker], broker: Broker, history: int) -> None:
    """Make Redis retain exactly ``history`` events, as the in-process broker does.

    The Redis broker trims approximately and keeps at least 100 entries; an exact ``XTRIM``
    (which an operator may run too) brings it to the count the test expects, so that what is
    tested is its answer to a trimmed id, not how much ``MAXLEN ~`` happens to keep.
    """
    if make_broker.backend == "redis":  # type: ignore[attr-defined]
        import redis

        assert isinstance(broker, RedisBroker)
        redis.Redis.from_url(broker.url).xtrim(STREAM_KEY, maxlen=history, approximate=False)


@pytest.fixture
def broker(make_broker: t.Callable[..., Broker]) -> Broker:
    return make_broker()


def frame(data: str, event: str | None = None) -> bytes:
    """An event as the extension hands it to a broker: encoded without an id."""
    return encode_event(Event(data=data, event=event))


def parse(payload: bytes) -> list[Parsed]:
    """Frames as a conformant client (httpx-sse's decoder) sees them."""
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    for line in [*lines.decode(payload.decode("utf-8")), *lines.flush()]:
        event = decoder.decode(line)
        if event is not None:
            events.append(Parsed(event.id, event.event, event.data))
    return events


def receive(subscription: Subscription, count: int, timeout: float = 10.0) -> list[Parsed]:
    """Wait for exactly ``count`` live events; fail on fewer by the deadline or on more."""
    received: list[Parsed] = []
    deadline = time.monotonic() + timeout
    while len(received) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"received {len(received)} of {count} events: {received[-5:]}")
        received.extend(parse(subscription.wait(min(remaining, 0.5))))
    assert len(received) == count, received[count:]
    return received


def nothing_more(subscription: Subscription, timeout: float = 0.1) -> bool:
    """Whether nothing more arrives within ``timeout``."""
    return subscription.wait(timeout) == b""


def replayed(subscription: Subscription) -> list[Parsed]:
    return parse(b"".join(subscription.replay))


# --- ids and delivery ---------------------------------------------------------------------


def test_publish_returns_the_id_the_frame_carries(broker: Broker) -> None:
    """The id publish returns is the one subscribers get, with the event's type and data."""
    subscription = broker.subscribe(["news"], None, queue_size=10)
    event_id = broker.publish("news", frame("hello", event="greeting"))
    assert isinstance(event_id, str) and event_id
    assert receive(subscription, 1) == [Parsed(event_id, "greeting", "hello")]


def test_ids_strictly_increase(broker: Broker) -> None:
    """Ids are unique, and each one marks a position: resuming after it gives exactly what followed."""
    ids = [broker.publish("a" if i % 2 else "b", frame(str(i))) for i in range(20)]
    assert len(set(ids)) == len(ids)
    for position in (0, 7, 18, 19):
        subscription = broker.subscribe(["a", "b"], ids[position], queue_size=10)
        assert [event.id for event in replayed(subscription)] == ids[position + 1 :]
        subscription.close()


def test_ids_differ_between_broker_lifetimes(make_broker: t.Callable[..., Broker]) -> None:
    """A new broker (a restarted worker) never reissues an id an old one handed out."""
    first, second = make_broker(), make_broker()
    old = [first.publish("a", frame(str(i))) for i in range(5)]
    new = [second.publish("a", frame(str(i))) for i in range(5)]
    assert not set(old) & set(new)


def test_delivery_only_to_subscribers_of_the_channel(broker: Broker) -> None:
    """An event reaches every subscriber of its channel and nobody else."""
    a1 = broker.subscribe(["a"], None, queue_size=10)
    a2 = broker.subscribe(["a"], None, queue_size=10)
    b = broker.subscribe(["b"], None, queue_size=10)
    event_id = broker.publish("a", frame("for a"))
    assert receive(a1, 1) == receive(a2, 1) == [Parsed(event_id, "message", "for a")]
    assert nothing_more(b)
    broker.publish("nobody-listens", frame("lost"))
    assert nothing_more(a1) and nothing_more(b)


def test_multi_channel_subscription_in_publish_order(broker: Broker) -> None:
    """One subscription to several channels gets each event once, in publish order."""
    subscription = broker.subscribe(["a", "b", "c"], None, queue_size=100)
    published = [
        (broker.publish(channel, frame(f"{channel}{i}")), f"{channel}{i}")
        for i in range(10)
        for channel in "abcd"
    ]
    expected = [(event_id, data) for event_id, data in published if not data.startswith("d")]
    assert [(event.id, event.data) for event in receive(subscription, len(expected))] == expected
    assert nothing_more(subscription)


def test_duplicate_channels_count_once(broker: Broker) -> None:
    """Naming a channel twice in one subscription delivers each event once and closes cleanly."""
    subscription = broker.subscribe(["a", "a"], None, queue_size=10)
    event_id = broker.publish("a", frame("x"))
    assert [event.id for event in receive(subscription, 1)] == [event_id]
    assert nothing_more(subscription)
    subscription.close()
    assert wait_until(
        lambda: broker.stats()["consumers"] == 0, message="the subscription to be gone"
    )
    assert broker.stats()["channels"] == {}


def test_wait_times_out_empty(broker: Broker) -> None:
    """With nothing to deliver, wait returns b"" after about its timeout."""
    subscription = broker.subscribe(["a"], None, queue_size=10)
    started = time.monotonic()
    assert subscription.wait(0.1) == b""
    assert 0.09 <= time.monotonic() - started < 2


def test_pending_frames_come_in_one_wait(broker: Broker) -> None:
    """Everything pending is returned by one wait, joined, in order."""
    subscription = broker.subscribe(["a"], None, queue_size=10)
    witness = broker.subscribe(["a"], None, queue_size=10)
    ids = [broker.publish("a", frame(str(i))) for i in range(3)]
    receive(witness, 3)  # delivery to one subscriber of a process is delivery to all
    assert [event.id for event in parse(subscription.wait(0))] == ids


# --- replay ---------------------------------------------------------------------------


def test_no_replay_without_last_event_id(broker: Broker) -> None:
    """A fresh subscription starts live: nothing is replayed."""
    broker.publish("a", frame("old"))
    assert broker.subscribe(["a"], None, queue_size=10).replay == []


def test_replay_after_id(broker: Broker) -> None:
    """Resuming replays exactly the later events of the requested channels, in order, then goes live."""
    published = [
        (channel, broker.publish(channel, frame(f"{channel}{i}")))
        for i in range(12)
        for channel in "abc"
    ]
    last = published[10][1]
    subscription = broker.subscribe(["a", "c"], last, queue_size=100)
    assert [event.id for event in replayed(subscription)] == [
        event_id for channel, event_id in published[11:] if channel in "ac"
    ]
    live = broker.publish("c", frame("live"))
    broker.publish("b", frame("not for us"))
    assert [event.id for event in receive(subscription, 1)] == [live]
    assert nothing_more(subscription)


def test_the_replay_is_handed_out_once(broker: Broker) -> None:
    """The stream takes the replay when it starts; nothing of it stays behind."""
    first, second = (broker.publish("a", frame(str(i))) for i in range(2))
    subscription = broker.subscribe(["a"], first, queue_size=10)
    assert [event.id for event in parse(b"".join(subscription.take_replay()))] == [second]
    assert subscription.replay == [] and subscription.take_replay() == []


def test_resumes_from_one_id_replay_alike_until_the_next_event(broker: Broker) -> None:
    """Resumes from the same id replay the same events, whatever the other resumes took of
    theirs, in their own channels; an event published meanwhile is in the next one's."""
    first, second = (broker.publish("a", frame(str(i))) for i in range(2))
    taken = broker.subscribe(["a"], first, queue_size=10)
    assert [event.id for event in replayed(taken)] == [second]
    taken.extend_replay([frame("only for this one")])
    assert [event.id for event in replayed(broker.subscribe(["a"], first, queue_size=10))] == [
        second
    ]
    assert replayed(broker.subscribe(["b"], first, queue_size=10)) == []
    third = broker.publish("a", frame("2"))
    assert [event.id for event in replayed(broker.subscribe(["a"], first, queue_size=10))] == [
        second,
        third,
    ]


def test_replay_from_the_latest_id_is_empty(broker: Broker) -> None:
    """A client that has everything gets no replay and no ``missed``."""
    last = [broker.publish("a", frame(str(i))) for i in range(3)][-1]
    assert broker.subscribe(["a"], last, queue_size=10).replay == []


def test_replay_keeps_types_and_data(broker: Broker) -> None:
    """Replayed frames are the published ones: type, multi-line data and unicode intact."""
    first = broker.publish("a", frame("x"))
    second = broker.publish("a", frame("line 1\nline 2 \u2713", event="update"))
    assert replayed(broker.subscribe(["a"], first, queue_size=10)) == [
        Parsed(second, "update", "line 1\nline 2 \u2713")
    ]


def test_replay_then_live_without_gap_or_duplicate_under_concurrent_publish(broker: Broker) -> None:
    """While another thread publishes, each resume sees replay then live as one contiguous run."""
    total = 1000
    ids: list[str] = []

    def publish() -> None:
        for i in range(total):
            ids.append(broker.publish("race", frame(str(i))))
            time.sleep(0)  # let the subscribing thread in between any two publishes

    publisher = threading.Thread(target=publish)
    publisher.start()
    subscriptions: list[tuple[int, Subscription]] = []
    try:
        wait_until(lambda: ids, message="the first publish")
        while publisher.is_alive() and len(subscriptions) < 100:
            after = len(ids) - 1  # the list only grows: ids[after] is published
            subscriptions.append((after, broker.subscribe(["race"], ids[after], queue_size=total)))
            time.sleep(0)
    finally:
        publisher.join(30)
    assert not publisher.is_alive() and len(ids) == total
    assert len({after for after, _ in subscriptions}) > 5, (
        "the publisher finished before the race began"
    )
    number_of = {event_id: i for i, event_id in enumerate(ids)}
    for after, subscription in subscriptions:
        events = replayed(subscription)
        events += receive(subscription, total - 1 - after - len(events))
        assert [int(event.data) for event in events] == list(range(after + 1, total)), (
            f"resumed after {after}"
        )
        assert [number_of[event.id] for event in events] == list(range(after + 1, total))
        assert subscription.wait(0) == b"", "a duplicate after the last event"
        subscription.close()


# --- missed ---------------------------------------------------------------------------


def missed_frame(event: Parsed, last_event_id: str) -> dict[str, t.Any]:
    """Check ``event`` is a ``missed`` frame for ``last_event_id``; return its data."""
    assert event.event == "missed"
    assert event.id, "the missed frame must carry an id to resume from"
    data = json.loads(event.data)
    assert set(data) == {"last_event_id", "oldest_retained"}
    assert data["last_event_id"] == last_event_id
    return t.cast(dict[str, t.Any], data)


def test_missed_when_older_than_history(make_broker: t.Callable[..., Broker]) -> None:
    """An id older than the history gets ``missed`` first, then everything retained, then live."""
    broker = make_broker(history=5)
    ids = [broker.publish("a", frame(str(i))) for i in range(12)]
    exact_history(make_broker, broker, 5)
    subscription = broker.subscribe(["a"], ids[2], queue_size=100)
    missed, *rest = replayed(subscription)
    assert missed_frame(missed, ids[2])["oldest_retained"] == ids[7]
    assert [event.id for event in rest] == ids[7:]
    live = broker.publish("a", frame("live"))
    assert [event.id for event in receive(subscription, 1)] == [live]


def test_resume_from_1000_events_back_says_missed_and_from_the_latest_does_not(
    make_broker: t.Callable[..., Broker],
) -> None:
    """With history=100, an id 1,000 events back gets ``missed``, then a retained suffix
    that holds at least the last 100 events; the latest id gets the next event, no ``missed``.
    On Redis this runs the broker's own approximate trimming (``MAXLEN ~``)."""
    broker = make_broker(history=100)
    first = broker.publish("a", frame("first"))
    ids = [broker.publish("a", frame(str(i))) for i in range(1000)]
    behind = broker.subscribe(["a"], first, queue_size=10)
    missed, *rest = replayed(behind)
    assert missed_frame(missed, first)["oldest_retained"] == rest[0].id
    assert 100 <= len(rest) < 1000 and [event.id for event in rest] == ids[-len(rest) :]
    assert replayed(broker.subscribe(["a"], missed.id, queue_size=10)) == rest
    latest = broker.subscribe(["a"], ids[-1], queue_size=10)
    assert latest.replay == [] and not latest.missed
    following = broker.publish("a", frame("next"))
    assert receive(latest, 1) == [Parsed(following, "message", "next")]


def test_missed_replays_only_the_requested_channels(make_broker: t.Callable[..., Broker]) -> None:
    """After ``missed``, only the retained events of the requested channels follow."""
    broker = make_broker(history=6)
    published = [
        (channel, broker.publish(channel, frame(channel))) for _ in range(5) for channel in "ab"
    ]
    exact_history(make_broker, broker, 6)
    subscription = broker.subscribe(["b"], published[0][1], queue_size=100)
    missed, *rest = replayed(subscription)
    missed_frame(missed, published[0][1])
    assert [event.id for event in rest] == [
        event_id for channel, event_id in published[4:] if channel == "b"
    ]


@pytest.mark.parametrize(
    "kind", ["other broker", "garbage", "empty", "from the future", "spaces", "non-ascii digits"]
)
def test_missed_when_id_unknown(make_broker: t.Callable[..., Broker], kind: str) -> None:
    """An id this broker never issued gets ``missed``, then every retained event: never a silent loss."""
    broker = make_broker(history=100)
    ids = [broker.publish("a", frame(str(i))) for i in range(4)]
    prefix, _, number = ids[-1].rpartition("-")
    unknown = {
        "other broker": make_broker().publish("a", frame("elsewhere")),
        "garbage": "garbage",
        "empty": "",
        "from the future": f"{prefix}-{int(number) + 1000}",
        "spaces": f" {ids[1]} ",
        "non-ascii digits": f"{prefix}-\u0661",
    }[kind]
    subscription = broker.subscribe(["a"], unknown, queue_size=100)
    missed, *rest = replayed(subscription)
    assert missed_frame(missed, unknown)["oldest_retained"] == ids[0]
    assert [event.id for event in rest] == ids


def test_resume_from_the_missed_frame_id(make_broker: t.Callable[..., Broker]) -> None:
    """A client cut off right after ``missed`` resumes from its id with the full replay, no second ``missed``."""
    broker = make_broker(history=3)
    ids = [broker.publish("a", frame(str(i))) for i in range(8)]
    exact_history(make_broker, broker, 3)
    (missed, *_) = replayed(broker.subscribe(["a"], "unknown", queue_size=10))
    again = replayed(broker.subscribe(["a"], missed.id, queue_size=10))
    assert [event.id for event in again] == ids[5:]


def test_missed_with_nothing_retained_yet(broker: Broker) -> None:
    """An unknown id on an empty broker gets ``missed`` with no oldest event, and nothing else."""
    subscription = broker.subscribe(["a"], "from-an-old-worker-42", queue_size=10)
    (missed,) = replayed(subscription)
    assert missed_frame(missed, "from-an-old-worker-42")["oldest_retained"] is None
    assert replayed(broker.subscribe(["a"], missed.id, queue_size=10)) == []
    event_id = broker.publish("a", frame("first"))
    assert [event.id for event in receive(subscription, 1)] == [event_id]


def test_history_zero_keeps_nothing(make_broker: t.Callable[..., Broker]) -> None:
    """With history=0 nothing is replayed: a client that missed events is told so."""
    broker = make_broker(history=0)
    ids = [broker.publish("a", frame(str(i))) for i in range(3)]
    exact_history(make_broker, broker, 0)
    (missed,) = replayed(broker.subscribe(["a"], ids[0], queue_size=10))
    assert missed_frame(missed, ids[0])["oldest_retained"] is None
    assert broker.subscribe(["a"], ids[-1], queue_size=10).replay == []


# --- slow consumers, stats, close -------------------------------------------------------------


def test_slow_consumer_is_cut_off(broker: Broker) -> None:
    """A subscriber queue_size behind is closed at the next event, counted, and its frames freed."""
    slow = broker.subscribe(["a"], None, queue_size=3)
    other = broker.subscribe(["a"], None, queue_size=100)
    ids = [broker.publish("a", frame(str(i))) for i in range(3)]
    assert [event.id for event in receive(other, 3)] == ids
    assert slow.closed is None, "a subscriber exactly queue_size behind is still served"
    ids.append(broker.publish("a", frame("3")))
    wait_until(lambda: slow.closed is not None, message="the slow subscriber to be cut off")
    assert slow.closed == "slow consumer"
    assert broker.stats()["dropped"] == 1
    assert slow.wait(0) == b"", "a dropped subscriber's pending frames are freed"
    ids += [broker.publish("a", frame(str(i))) for i in range(4, 10)]
    assert [event.id for event in receive(other, 7)] == ids[3:], "the others are unaffected"
    assert other.closed is None
    assert broker.stats()["consumers"] == 1 and broker.stats()["dropped"] == 1


def test_end_reasons_read_as_the_log_has_them() -> None:
    """``stream closed (<reason>)`` in the log is the reason's text, however it is formatted."""
    record = logging.makeLogRecord({"msg": "(%s)", "args": (End.SLOW,)})
    assert record.getMessage() == "(slow consumer)"
    assert [f"{reason}" for reason in End] == [str(reason) for reason in End]
    assert [str(reason) for reason in End] == [reason.value for reason in End]
    assert End("slow consumer") is End.SLOW


def test_slow_consumer_is_cut_off_on_any_channel(broker: Broker) -> None:
    """Falling behind across several channels counts as well."""
    slow = broker.subscribe(["a", "b"], None, queue_size=2)
    for channel in "abb":
        broker.publish(channel, frame(channel))
    wait_until(lambda: slow.closed == "slow consumer", message="the slow subscriber to be cut off")
    assert broker.stats()["channels"] == {}


def test_stats(broker: Broker) -> None:
    """stats() counts open subscriptions, per channel, published and dropped; back to 0 after close."""
    # The contract's words, not the code's own broker.name.
    backend = {MemoryBroker: "memory", RedisBroker: "redis"}[type(broker)]
    empty = {"consumers": 0, "channels": {}, "published": 0, "dropped": 0, "backend": backend}
    assert broker.stats() == empty
    ab = broker.subscribe(["a", "b"], None, queue_size=10)
    a = broker.subscribe(["a"], None, queue_size=10)
    broker.publish("a", frame("x"))
    broker.publish("z", frame("y"))
    stats = broker.stats()
    assert (stats["consumers"], stats["channels"], stats["published"], stats["dropped"]) == (
        2,
        {"a": 2, "b": 1},
        2,
        0,
    )
    ab.close()
    assert broker.stats()["channels"] == {"a": 1}
    a.close()
    a.close()  # idempotent
    stats = broker.stats()
    assert (stats["consumers"], stats["channels"], stats["published"]) == (0, {}, 2)
    assert stats["backend"] == backend


def test_closed_subscription_drains_what_it_had_and_gets_nothing_more(broker: Broker) -> None:
    """After close, frames already delivered can still be read, and no new ones arrive."""
    subscription = broker.subscribe(["a"], None, queue_size=10)
    witness = broker.subscribe(["a"], None, queue_size=10)
    first = broker.publish("a", frame("before"))
    receive(witness, 1)
    subscription.close()
    assert subscription.closed is not None
    second = broker.publish("a", frame("after"))
    assert [event.id for event in receive(witness, 1)] == [second]
    assert [event.id for event in parse(subscription.wait(5))] == [first]
    assert subscription.wait(5) == b""


def test_wait_returns_at_once_when_closed(broker: Broker) -> None:
    """A wait blocked in another thread returns promptly when the subscription is closed."""
    subscription = broker.subscribe(["a"], None, queue_size=10)
    results: list[bytes] = []
    waiter = threading.Thread(target=lambda: results.append(subscription.wait(30)))
    waiter.start()
    started = time.monotonic()
    subscription.close()
    waiter.join(5)
    assert results == [b""] and time.monotonic() - started < 5


def test_broker_close_ends_every_subscription(broker: Broker) -> None:
    """close() closes every subscription, waking their waits; the counts drop to 0."""
    subscriptions = [
        broker.subscribe([channel], None, queue_size=10) for channel in ("a", "a", "b")
    ]
    results: list[bytes] = []
    waiters = [
        threading.Thread(target=lambda s=s: results.append(s.wait(30))) for s in subscriptions
    ]
    for waiter in waiters:
        waiter.start()
    started = time.monotonic()
    broker.close()
    for waiter in waiters:
        waiter.join(5)
    assert results == [b""] * 3 and time.monotonic() - started < 5
    assert all(subscription.closed is not None for subscription in subscriptions)
    assert broker.stats()["consumers"] == 0 and broker.stats()["channels"] == {}


def test_ping(broker: Broker) -> None:
    """A reachable broker's ping returns without raising."""
    broker.ping()


# --- threads -----------------------------------------------------------------------------


def test_threads_publishing_and_draining(broker: Broker) -> None:
    """Several threads publish while several drain: none lost, none twice, each publisher's order kept."""
    publishers, per_publisher, readers = 4, 400, 3
    total = publishers * per_publisher
    subscriptions = [broker.subscribe(["t"], None, queue_size=total) for _ in range(readers)]
    received: list[list[Parsed]] = [[] for _ in range(readers)]
    ids: list[list[str]] = [[] for _ in range(publishers)]
    barrier = threading.Barrier(publishers)

    def publish(p: int) -> None:
        barrier.wait()
        for i in range(per_publisher):
            ids[p].append(broker.publish("t", frame(f"{p}:{i}")))

    def drain(r: int) -> None:
        received[r] = receive(subscriptions[r], total, timeout=30)

    threads = [threading.Thread(target=publish, args=(p,)) for p in range(publishers)]
    threads += [threading.Thread(target=drain, args=(r,)) for r in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    all_ids = [event_id for publisher_ids in ids for event_id in publisher_ids]
    assert len(set(all_ids)) == total
    for events in received:
        assert len(events) == total and len({event.id for event in events}) == total
        for p in range(publishers):
            mine = [event for event in events if event.data.startswith(f"{p}:")]
            assert [event.data for event in mine] == [f"{p}:{i}" for i in range(per_publisher)]
            assert [event.id for event in mine] == ids[p]
    # every reader saw the one broker order
    assert (
        [event.id for event in received[0]]
        == [event.id for event in received[1]]
        == [event.id for event in received[2]]
    )
    assert broker.stats()["published"] == total
