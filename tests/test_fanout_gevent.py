"""A subscription's wake-up under gevent's monkey-patching, where it is a bare greenlet
switch rather than an Event (sse_flask.broker.fanout._GreenletWakeup).

Monkey-patching cannot be undone inside pytest's process, so each case runs in a fresh
interpreter that patches first, as gunicorn's gevent worker does.
"""

from __future__ import annotations

import textwrap

import pytest
from helpers.interpreter import run_ok

PRELUDE = """
from gevent import monkey; monkey.patch_all()
import time, gevent
from sse_flask.broker import MemoryBroker
from sse_flask.broker.fanout import _GreenletWakeup
broker = MemoryBroker(history=10)
sub = broker.subscribe(["a"], None, queue_size=10)
assert isinstance(sub._wakeup, _GreenletWakeup), type(sub._wakeup)
"""

CASES = {
    "a timed wait with nothing pending returns empty after its timeout": """
        started = time.monotonic()
        assert sub.wait(0.05) == b""
        assert 0.04 <= time.monotonic() - started < 1
    """,
    "a frame published by another greenlet wakes an untimed wait": """
        gevent.spawn_later(0.02, broker.publish, "a", b"data: x\\n\\n")
        with gevent.Timeout(2):
            assert sub.wait(None).endswith(b"data: x\\n\\n")
    """,
    "a frame published by a native OS thread wakes the waiting greenlet": """
        start_new_thread = monkey.get_original("_thread", "start_new_thread")
        thread_sleep = monkey.get_original("time", "sleep")

        def publish_once_parked():
            # Only a greenlet that is already waiting needs waking: publish once it is.
            deadline = time.monotonic() + 5
            while sub._wakeup._waiter is None and time.monotonic() < deadline:
                thread_sleep(0.001)
            broker.publish("a", b"data: t\\n\\n")

        start_new_thread(publish_once_parked, ())
        with gevent.Timeout(2):
            assert sub.wait(None).endswith(b"data: t\\n\\n")
    """,
    "what arrived before the wait is returned without waiting": """
        broker.publish("a", b"data: 1\\n\\n")
        broker.publish("a", b"data: 2\\n\\n")
        assert sub.wait(0).count(b"data:") == 2
    """,
    "wake() ends a pending wait with nothing, and the next wait waits again": """
        gevent.spawn_later(0.02, sub.wake)
        with gevent.Timeout(2):
            assert sub.wait(None) == b""
        started = time.monotonic()
        assert sub.wait(0.05) == b""
        assert time.monotonic() - started >= 0.04
    """,
    "a held subscription gathers frames and is released within the write interval": """
        sub.hold()
        broker.publish("a", b"data: 1\\n\\n")
        broker.publish("a", b"data: 2\\n\\n")
        with gevent.Timeout(2):
            assert sub.wait(None).count(b"data:") == 2
    """,
    "closing wakes a held wait at once": """
        sub.hold()
        gevent.spawn_later(0.02, sub.close)
        with gevent.Timeout(2):
            assert sub.wait(None) == b""
        assert sub.closed is not None
    """,
}


@pytest.mark.parametrize("case", list(CASES))
def test_greenlet_wakeup(case: str) -> None:
    run_ok(PRELUDE + textwrap.dedent(CASES[case]))


def test_gevent_imported_without_monkey_patching_uses_plain_threading() -> None:
    """An app that imports gevent (a library may) but does not patch gets the thread-based
    wait, and no gevent socket watcher (only the look at the socket before each heartbeat
    that threaded servers get), instead of an AttributeError for gevent.monkey."""
    script = """
import threading, gevent
from sse_flask.broker import MemoryBroker
from sse_flask.stream import EventStream
broker = MemoryBroker(history=10)
sub = broker.subscribe(["a"], None, queue_size=10)
assert isinstance(sub._wakeup, threading.Event), type(sub._wakeup)
stream = EventStream(sub, heartbeat=5, retry_ms=1000, lifetime=0, environ={"gunicorn.socket": object()}, on_close=lambda: None)
assert stream._peer is not None and stream._peer._watcher is None
stream.close()
"""
    run_ok(script)
