"""``sse.stream(items)``: a view's own event stream, one event per item of an iterable.

The items run in a :class:`~sse_flask.tasks.Task` (a greenlet under gevent, a thread
otherwise), apart from the writer, so that the writer keeps sending heartbeats while the
items are slow to come (a model that has not produced its first token yet). The writer is
the same :class:`~sse_flask.stream.EventStream` that ``/events`` uses: heartbeats, gzip,
the gevent worker's direct writes and the watch on the client's socket all come with it.
Each view stream is a subscription, on a channel of its own, of the app's fan-out of view
streams, which the task delivers to.

The task runs inside the view's app and request contexts, pushed again as Flask's
``stream_with_context`` does, and pops them when the items end or the client leaves, so
that the request's teardown runs then (teardown functions run once when the view returns,
as for any streamed response, and again when the stream ends). The task starts when the
server starts sending the body, after Flask has popped the view's own contexts.

Deliberate choices:

- A client that reads slowly is not cut off (it cannot resume a view stream): the items
  wait while ``SSE_QUEUE_SIZE`` frames are queued for it.
- ``done`` carries ``{"items": N}``, so that a client can tell it has them all; ``error``
  carries ``{"error": "..."}`` with a message that reveals nothing of the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
import typing as t

from flask import Response, has_request_context, jsonify, request
from flask.globals import app_ctx, request_ctx

from .broker.fanout import WRITE_INTERVAL, End, Fanout
from .events import Event, encode_event
from .stream import EventStream, stream_response
from .tasks import DONE, ERROR, Task

if t.TYPE_CHECKING:
    from .config import Settings

__all__ = ["FAILED_MESSAGE", "stream_items"]

#: What a client is told when the items raise: the details go to the log only.
FAILED_MESSAGE = "the stream failed on the server; the details are in the server's log"

_numbers = itertools.count(1)


class Slots(t.Protocol):
    """Where a worker counts its streams (the app's extension state)."""

    def reserve_stream(self, address: str, environ: t.Mapping[str, t.Any]) -> str | None: ...
    def release_stream(self, address: str) -> None: ...


def stream_items(
    items: t.Iterable[t.Any], *, settings: Settings, slots: Slots, fanout: Fanout
) -> Response:
    """Answer the current request with one event per item of ``items``, then ``done``.

    :param fanout: the app's fan-out of view streams, where each has a channel of its own
        (made when the app is set up, after gevent has patched, as its locks must be).

    :raises RuntimeError: outside a request.
    """
    if not has_request_context():
        raise RuntimeError(
            "sse.stream() answers the current request; call it in a view and return what it returns"
        )
    address = request.remote_addr or ""
    refusal = slots.reserve_stream(address, request.environ)
    if refusal is not None:
        response = jsonify(error=refusal)
        response.status_code = 503
        response.headers["Retry-After"] = str(max(1, settings.retry_ms // 1000))
        return response
    key = f"{request.method} {request.path} #{next(_numbers)}"
    with fanout.lock:
        subscription = fanout.subscribe([key], settings.queue_size)
    numbers = itertools.count(1)

    def deliver(frame: bytes) -> bool:
        # Back-pressure: wait for the client to take what is queued rather than cut it off.
        while subscription.pending() >= settings.queue_size:
            if task.cancelled or subscription.closed is not None:
                return False
            time.sleep(WRITE_INTERVAL)
        with fanout.lock:
            fanout.deliver(key, frame)
        return subscription.closed is None

    def emit(item: t.Any) -> bool:
        return deliver(_frame(item, next(numbers)))

    def finish(outcome: str, count: int) -> None:
        if outcome == DONE:
            deliver(encode_event(Event(data={"items": count}, event="done", id=str(next(numbers)))))
        elif outcome == ERROR:
            deliver(
                encode_event(
                    Event(data={"error": FAILED_MESSAGE}, event="error", id=str(next(numbers)))
                )
            )
        # Cancelled: the stream has ended already (its client left, or the worker stops).
        subscription.close(
            End.FINISHED if outcome == DONE else End.FAILED if outcome == ERROR else End.CLIENT
        )

    contexts = (
        t.cast(t.Any, app_ctx)._get_current_object(),
        t.cast(t.Any, request_ctx)._get_current_object(),
    )
    task = Task(
        lambda: items,
        emit=emit,
        finish=finish,
        context=lambda: _pushed(*contexts),
        name=f"view stream {request.method} {request.path}",
    )

    def closed() -> None:
        slots.release_stream(address)
        task.cancel()

    compress = settings.compress and request.accept_encodings["gzip"] > 0
    body = EventStream(
        subscription,
        heartbeat=settings.heartbeat,
        retry_ms=settings.retry_ms,
        lifetime=0,
        compress=compress,
        environ=request.environ,
        on_close=closed,
        on_open=task.start,
    )
    return stream_response(body, negotiated=settings.compress)


def _frame(item: t.Any, number: int) -> bytes:
    """``item`` as one event: an :class:`Event` as given (numbered if it has no id), any
    other value as its data."""
    if isinstance(item, Event):
        return encode_event(
            item if item.id is not None else dataclasses.replace(item, id=str(number))
        )
    return encode_event(Event(data=item, id=str(number)))


@contextlib.contextmanager
def _pushed(app_context: t.Any, request_context: t.Any) -> t.Iterator[None]:
    """The view's contexts, pushed again in the task (the app's first, so that the request
    context does not make an app context of its own)."""
    with app_context, request_context:
        yield
