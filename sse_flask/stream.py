"""One client's stream: the WSGI response body that writes a subscription's frames.

It runs outside Flask's request context (no ``stream_with_context``), so that nothing of
Flask's request machinery is touched per event. It writes ``retry:`` and any replay first,
then, each time it wakes, everything pending as one chunk (one write, one syscall, however
many events arrived), and a comment when the stream has been idle for the heartbeat.

Cleanup is in :meth:`EventStream.close`, which every WSGI server calls (PEP 3333) even when
the body was never iterated, which a ``finally`` in a generator would miss. Under gunicorn's
gevent worker a watcher on the client's socket notices a closed connection at once; under
threaded servers that show the socket (gunicorn, waitress, werkzeug) a look at it before
each heartbeat does; elsewhere, the first failed write.

Under :class:`sse_flask.worker.GeventWorker`, publishers send frames to a waiting stream's
socket themselves, through the writer the worker gives it (:meth:`EventStream.write_through`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import sys
import time
import typing as t
import zlib

from flask import Response

from .broker.fanout import TICK, End, Subscription
from .events import encode_comment, encode_retry
from .metrics import metrics, sent

if t.TYPE_CHECKING:
    from .worker import IOWatcher

__all__ = ["STREAM_HEADERS", "EventStream", "SocketWriter", "stream_response"]

log = logging.getLogger("sse_flask")

_HEARTBEAT = encode_comment("heartbeat")
#: Replayed frames are written in chunks of about this size rather than all at once.
_REPLAY_CHUNK = 256 * 1024
#: The headers of every event stream response.
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told not to, which would hold events back.
    "X-Accel-Buffering": "no",
    # No "Connection" header: it is hop-by-hop, and PEP 3333 forbids applications to set it.
}


class SocketWriter(t.Protocol):
    """Sends frames straight to the client's socket; see :mod:`sse_flask.worker`."""

    #: What the socket did not take of the last send, to be written before anything else.
    rest: bytes

    def send(self, data: bytes) -> bool:
        """Send ``data`` without blocking; ``False`` if none of it went out."""

    def flush(self) -> None:
        """Write :attr:`rest`, blocking the calling greenlet."""


class EventStream:
    """An iterable of the frames to send to one client, closing its subscription on close.

    :param subscription: from :meth:`Broker.subscribe`.
    :param heartbeat: seconds of idleness after which a comment is sent.
    :param retry_ms: the ``retry:`` sent first.
    :param lifetime: close the stream after about this many seconds (with up to 10% less,
        at random, so that clients do not all reconnect at once); 0 means never.
    :param expires_in: close the stream after exactly this many seconds (its subscribe
        token expires then); ``None`` means never.
    :param compress: gzip the stream, with a sync flush after each write so that every
        event still reaches the client at once.
    :param environ: the WSGI environ, to find the client's socket where the server has one.
    :param on_close: called once, when the stream is closed.
    :param on_open: called once, when the server starts sending the body: after the
        application has returned, so after Flask has popped the view's request context.
    """

    def __init__(
        self,
        subscription: Subscription,
        *,
        heartbeat: float,
        retry_ms: int,
        lifetime: float,
        expires_in: float | None = None,
        compress: bool = False,
        environ: t.Mapping[str, t.Any],
        on_close: t.Callable[[], None],
        on_open: t.Callable[[], None] | None = None,
    ) -> None:
        self._subscription = subscription
        self._heartbeat = heartbeat
        self._retry_ms = retry_ms
        lifetimes = [lifetime * random.uniform(0.9, 1.0)] if lifetime else []
        if expires_in is not None:
            lifetimes.append(max(expires_in, 0.0))
        self._lifetime = min(lifetimes) if lifetimes else None
        self._on_close: t.Callable[[], None] | None = on_close
        self._on_open = on_open
        self._peer = _PeerWatch.start(environ, subscription)
        self._opened = time.monotonic()
        self._replayed = len(subscription.replay)
        self._bytes = 0
        self._events = 0
        self._last_write = self._opened
        self._writer: SocketWriter | None = None
        self._ended: End | None = None
        self._compress = compress
        metrics().streams_open.inc()

    def __iter__(self) -> t.Iterator[bytes]:
        return _gzip(self._frames()) if self._compress else self._frames()

    def write_through(self, writer: SocketWriter) -> None:
        """Let publishers send frames through ``writer`` while the stream waits with nothing
        queued (not for a gzipped stream, whose frames must go through its compressor)."""
        if not self._compress:
            self._writer = writer

    def close(self) -> None:
        """End the subscription, release the stream's slot and log why it ended; idempotent."""
        if self._on_close is None:
            return
        on_close, self._on_close = self._on_close, None
        subscription = self._subscription
        reason = self._ended or subscription.closed or End.CLIENT
        subscription.close()
        if self._peer is not None:
            self._peer.stop()
        on_close()
        figures = metrics()
        figures.streams_open.dec()
        if reason is End.SLOW:
            figures.dropped.inc()
        log.info(
            "stream closed (%s) after %.1f s: %d events, %d bytes, channels %s",
            reason,
            time.monotonic() - self._opened,
            self._events,
            self._bytes,
            ",".join(subscription.channels),
        )

    def _frames(self) -> t.Generator[bytes, None, None]:
        if self._on_open is not None:
            self._on_open()
        subscription = self._subscription
        for chunk in _chunks([encode_retry(self._retry_ms), *subscription.take_replay()]):
            yield chunk
            self._wrote(len(chunk), 0)
        self._wrote(0, self._replayed)
        writer = self._writer
        send = self._send if writer is not None else None
        now = self._last_write = time.monotonic()
        deadline = now + self._lifetime if self._lifetime is not None else None
        while True:
            due = self._last_write + self._heartbeat
            if deadline is not None:
                due = min(due, deadline)
            taken = subscription.taken
            if due - now > TICK:
                # Far off: the fan-out's ticker wakes us up to one tick early, and a short
                # timed wait does the rest; a timed wait on every wake-up costs far more.
                chunk = subscription.wait(None, wake_at=due - TICK, direct=send)
            else:
                chunk = subscription.wait(max(due - now, 0.0), direct=send)
            now = time.monotonic()
            if writer is not None and writer.rest:
                writer.flush()
            if chunk:
                yield chunk
                subscription.hold()
                self._wrote(len(chunk), subscription.taken - taken)
                self._last_write = now
            elif subscription.closed is not None:
                return
            elif self._peer is not None and self._peer.client_gone():
                self._ended = End.CLIENT
                return
            elif deadline is not None and now >= deadline:
                self._ended = End.LIFETIME
                return
            elif now - self._last_write >= self._heartbeat:
                yield _HEARTBEAT
                self._wrote(len(_HEARTBEAT), 0)
                self._last_write = now

    def _send(self, data: bytes, frames: int) -> bool:
        """Send ``frames`` joined as ``data`` through the writer while the stream waits: the
        ``direct`` of its :meth:`Subscription.wait`. The fan-out counts them in :data:`sent`."""
        writer = t.cast(SocketWriter, self._writer)
        if not writer.send(data):
            return False
        self._events += frames
        self._bytes += len(data)
        self._last_write = time.monotonic()
        if writer.rest:
            self._subscription.wake()
        return True

    def _wrote(self, size: int, frames: int) -> None:
        self._bytes += size
        self._events += frames
        sent.add(frames, size)


def stream_response(stream: EventStream, *, negotiated: bool) -> Response:
    """The response that sends ``stream``.

    :param negotiated: whether gzip was on offer (``SSE_COMPRESS``), so that caches keep
        the compressed and the plain answer apart.
    """
    # direct_passthrough: the server iterates the stream itself, without werkzeug's two
    # wrapping generators around each chunk (the stream yields bytes, and closes itself).
    response = Response(
        stream,
        headers=STREAM_HEADERS,
        content_type="text/event-stream; charset=utf-8",
        direct_passthrough=True,
    )
    if negotiated:
        response.vary.add("Accept-Encoding")
        if stream._compress:
            response.content_encoding = "gzip"
    return response


def _gzip(chunks: t.Generator[bytes, None, None]) -> t.Iterator[bytes]:
    """``chunks`` gzipped, each flushed so the client can decode it on arrival.

    A 4 KiB window and a small memory level keep the compressor near 24 KiB per stream
    (zlib's defaults take about 256 KiB); events of one stream repeat their keys within
    a few frames, which that window still catches.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + 12, 4)
    try:
        for chunk in chunks:
            yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    finally:
        chunks.close()


def _chunks(frames: list[bytes]) -> t.Iterator[bytes]:
    pending: list[bytes] = []
    size = 0
    for frame in frames:
        pending.append(frame)
        size += len(frame)
        if size >= _REPLAY_CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


class _PeerWatch:
    """Notices that the client has closed its connection, where the server shows its socket.

    A client of an event stream sends nothing after its request, so readability almost
    always means the connection was closed; :meth:`client_gone` peeks to make sure. Under
    gevent a watcher wakes the stream as soon as the socket turns readable; under threads
    the stream peeks each time it wakes with nothing to send, before each heartbeat, since
    a first write after the client closed usually succeeds and only the next one fails:
    the client is removed at the next heartbeat, not the one after. It also shuts the socket
    down when the subscription is cut off for being slow, which unblocks a write that the
    client will never read.
    """

    def __init__(
        self,
        sock: socket.socket,
        subscription: Subscription,
        raw: socket.socket | None = None,
        watcher: IOWatcher | None = None,
    ) -> None:
        self._sock = sock
        #: The socket to peek at without blocking: the OS socket inside gevent's.
        self._raw = sock if raw is None else raw
        self._subscription = subscription
        self._watcher = watcher
        self._readable = watcher is None
        if watcher is not None:
            watcher.start(self._on_readable)
        subscription.on_drop(self._on_drop)

    @classmethod
    def start(cls, environ: t.Mapping[str, t.Any], subscription: Subscription) -> _PeerWatch | None:
        sock = _client_socket(environ)
        if sock is None:
            return None
        monkey = sys.modules.get("gevent.monkey")
        if monkey is None or not monkey.is_module_patched("socket"):
            return cls(sock, subscription)
        from .worker import watch_socket

        return cls(sock, subscription, *watch_socket(sock))

    def client_gone(self) -> bool:
        """Whether the client closed its end; ``False`` if the socket was not readable."""
        if not self._readable:
            return False
        self._readable = self._watcher is None
        try:
            return self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            if self._watcher is not None:
                self._watcher.start(self._on_readable)
            return False
        except OSError:
            return True

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.close()

    def _on_readable(self) -> None:
        t.cast("IOWatcher", self._watcher).stop()
        self._readable = True
        self._subscription.wake()

    def _on_drop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)


def _client_socket(environ: t.Mapping[str, t.Any]) -> socket.socket | None:
    """The client's socket: gunicorn's and werkzeug's servers put it in the environ;
    waitress's is its channel's, which serves the request."""
    sock = environ.get("gunicorn.socket", environ.get("werkzeug.socket"))
    if sock is None and "waitress.client_disconnected" in environ:
        sock = environ["waitress.client_disconnected"].__self__.socket
    return t.cast("socket.socket | None", sock)
