"""The same wait in an interpreter that imports gevent (a library may) but does not
monkey-patch, nor import ``gevent.monkey``; run by tests/test_fanout_gevent.py through
``python -m patched.run``."""

from __future__ import annotations

import threading

import gevent  # noqa: F401  (imported, not patched: the case's premise)

from sse_flask.broker import MemoryBroker
from sse_flask.stream import EventStream


def plain_threading() -> None:
    broker = MemoryBroker(history=10)
    sub = broker.subscribe(["a"], None, queue_size=10)
    assert isinstance(sub._wakeup, threading.Event), type(sub._wakeup)
    stream = EventStream(
        sub,
        heartbeat=5,
        retry_ms=1000,
        lifetime=0,
        environ={"gunicorn.socket": object()},
        on_close=lambda: None,
    )
    assert stream._peer is not None and stream._peer._watcher is None
    stream.close()
