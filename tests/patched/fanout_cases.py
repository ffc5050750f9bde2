"""A subscription's wake-up under gevent's monkey-patching, where it is a bare greenlet switch
rather than an Event (sse_flask.broker.wakeup.GreenletWakeup), or for a parked stream a
callback in the hub (CallbackWakeup); run by
tests/test_fanout_gevent.py, one case per fresh patched interpreter."""

from __future__ import annotations

import time

import gevent
from gevent import monkey

from sse_flask.broker import MemoryBroker, fanout
from sse_flask.broker.fanout import Subscription
from sse_flask.broker.wakeup import GreenletWakeup, callback_wakeup


def subscribed() -> tuple[MemoryBroker, Subscription]:
    """A broker and a subscription to its channel ``a``, which waits on a greenlet switch."""
    broker = MemoryBroker(history=10)
    sub = broker.subscribe(["a"], None, queue_size=10)
    assert isinstance(sub._wakeup, GreenletWakeup), type(sub._wakeup)
    return broker, sub


def timed_wait_times_out() -> None:
    _, sub = subscribed()
    started = time.monotonic()
    assert sub.wait(0.05) == b""
    assert 0.04 <= time.monotonic() - started < 1


def publish_from_greenlet_wakes() -> None:
    broker, sub = subscribed()
    gevent.spawn_later(0.02, broker.publish, "a", b"data: x\n\n")
    with gevent.Timeout(2):
        assert sub.wait(None).endswith(b"data: x\n\n")


def publish_from_os_thread_wakes() -> None:
    broker, sub = subscribed()
    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    thread_sleep = monkey.get_original("time", "sleep")
    wakeup = sub._wakeup
    assert isinstance(wakeup, GreenletWakeup)

    def publish_once_parked() -> None:
        # Only a greenlet that is already waiting needs waking: publish once it is.
        deadline = time.monotonic() + 5
        while wakeup._waiter is None and time.monotonic() < deadline:
            thread_sleep(0.001)
        broker.publish("a", b"data: t\n\n")

    start_new_thread(publish_once_parked, ())
    with gevent.Timeout(2):
        assert sub.wait(None).endswith(b"data: t\n\n")


def pending_frames_return_at_once() -> None:
    broker, sub = subscribed()
    broker.publish("a", b"data: 1\n\n")
    broker.publish("a", b"data: 2\n\n")
    assert sub.wait(0).count(b"data:") == 2


def wake_ends_a_wait() -> None:
    _, sub = subscribed()
    gevent.spawn_later(0.02, sub.wake)
    with gevent.Timeout(2):
        assert sub.wait(None) == b""
    started = time.monotonic()
    assert sub.wait(0.05) == b""
    assert time.monotonic() - started >= 0.04


def held_subscription_is_released() -> None:
    broker, sub = subscribed()
    sub.hold()
    broker.publish("a", b"data: 1\n\n")
    broker.publish("a", b"data: 2\n\n")
    with gevent.Timeout(2):
        assert sub.wait(None).count(b"data:") == 2


def held_subscription_is_released_once_the_hub_is_idle() -> None:
    # Far longer than the case may take: only the hub's going idle can release it in time.
    fanout.WRITE_INTERVAL = 60
    broker, sub = subscribed()
    sub.hold()
    broker.publish("a", b"data: 1\n\n")
    with gevent.Timeout(2):
        assert sub.wait(None).endswith(b"data: 1\n\n")


def publish_releases_an_overdue_hold() -> None:
    # Nothing here switches greenlets, so the ticker never runs: only the publish can
    # release the hold, which is over as soon as it starts.
    fanout.WRITE_INTERVAL = 0
    broker, sub = subscribed()
    sub.hold()
    broker.publish("a", b"data: 1\n\n")
    assert not sub.held
    assert sub.wait(0).endswith(b"data: 1\n\n")


def close_wakes_a_held_wait() -> None:
    _, sub = subscribed()
    sub.hold()
    gevent.spawn_later(0.02, sub.close)
    with gevent.Timeout(2):
        assert sub.wait(None) == b""
    assert sub.closed is not None


def parked_wakeups() -> tuple[MemoryBroker, Subscription, list[bytes]]:
    """A broker and a parked subscription to ``a`` whose wake-ups take what is pending
    into the returned list, as a parked stream's step does."""
    broker, sub = subscribed()
    taken: list[bytes] = []
    sub.park(lambda data, frames: False, callback_wakeup(lambda: taken.append(sub.take())))
    return broker, sub, taken


def parked_wakeup_runs_in_the_hub_once() -> None:
    broker, _, taken = parked_wakeups()
    for n in range(3):
        broker.publish("a", b"data: %d\n\n" % n)
    assert taken == [], "the callback runs in the hub, not in the publisher"
    gevent.sleep(0)
    assert len(taken) == 1 and taken[0].count(b"data: ") == 3, taken


def parked_wakeup_from_os_thread() -> None:
    broker, _, taken = parked_wakeups()
    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    start_new_thread(broker.publish, ("a", b"data: t\n\n"))
    with gevent.Timeout(2):
        while not taken:
            gevent.sleep(0.001)
    assert taken[0].endswith(b"data: t\n\n"), taken
