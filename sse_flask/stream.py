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
socket themselves, through the writer the worker gives it (:meth:`EventStream.write_through`),
and once its opening is written the stream is parked (:meth:`EventStream.park`): served by
gevent's hub from callbacks, without a greenlet.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import socket
import sys
import time
import typing as t
import zlib

from flask import Response

from .broker.fanout import TICK, End, Subscription
from .broker.wakeup import callback_wakeup
from .events import encode_comment, encode_retry
from .metrics import metrics, sent

if t.TYPE_CHECKING:
    from .worker import IOWatcher

__all__ = ["STREAM_HEADERS", "EventStream", "ParkedWriter", "SocketWriter", "stream_response"]

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


class Cancellable(t.Protocol):
    """What :meth:`ParkedWriter.call_later` returns: a timer that ``close()`` cancels."""

    def close(self) -> None: ...


class ParkedWriter(SocketWriter, t.Protocol):
    """The writer of a parked stream (:meth:`EventStream.park`), which owns the client's
    socket; its methods never block, and run in gevent's hub."""

    #: The client's socket, to watch.
    sock: socket.socket
    #: Whether a write failed: the client is gone.
    broken: bool

    def write(self, data: bytes) -> None:
        """Send ``data`` as one chunk, keeping in :attr:`rest` what the socket does not take."""

    def end(self) -> None:
        """Send the end of the body (under chunked encoding, its last chunk) likewise."""

    def drain(self, callback: t.Callable[[], None]) -> None:
        """Write :attr:`rest` as the socket takes it, then call ``callback``; also once the
        client turns out to be gone. Called again meanwhile, it changes nothing."""

    def call_later(self, seconds: float, callback: t.Callable[[], None]) -> Cancellable:
        """Call ``callback`` in ``seconds``, unless cancelled by ``close()`` first."""

    def close(self) -> None:
        """Close the connection and give back the connection's place in the server."""


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
        self._parked: ParkedWriter | None = None
        self._timer: Cancellable | None = None
        self._finishing = False
        self._deadline: float | None = None
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

    def parks(self) -> bool:
        """Whether the stream can be parked (:meth:`park`): not if gzipped, since its frames
        go through its compressor."""
        return not self._compress

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

    def opening(self) -> t.Iterator[bytes]:
        """The chunks the stream starts with: ``retry:`` and the replay. :meth:`park`'s caller
        writes them itself; iterating the stream writes them first."""
        if self._on_open is not None:
            self._on_open()
        for chunk in _chunks([encode_retry(self._retry_ms), *self._subscription.take_replay()]):
            yield chunk
            self._wrote(len(chunk), 0)
        self._wrote(0, self._replayed)
        now = self._last_write = time.monotonic()
        self._deadline = now + self._lifetime if self._lifetime is not None else None

    def park(self, writer: ParkedWriter) -> None:
        """Serve the rest of the stream from gevent's hub, once :meth:`opening` is written:
        its server's greenlet returns, and an idle stream keeps neither a greenlet's stack
        nor what the server's request handling held on it. From then on the fan-out sends
        through ``writer`` (as to a stream waiting with its writer offered), and each wake-up
        of the subscription runs :meth:`_step` in the hub, which does what the loop of
        :meth:`_frames` does after each wait; ``writer`` owns the client's socket."""
        self._writer = self._parked = writer
        if self._peer is not None:
            self._peer.move(writer.sock)
        self._subscription.park(self._send, callback_wakeup(self._step))
        self._step()

    def _frames(self) -> t.Generator[bytes, None, None]:
        yield from self.opening()
        subscription = self._subscription
        writer = self._writer
        send = self._send if writer is not None else None
        now = self._last_write
        while True:
            due = self._due()
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
            out = self._next(chunk, now)
            if out is None:
                return
            if out:
                yield out
                self._wrote_live(out, subscription.taken - taken, now)

    def _step(self) -> None:
        """A parked stream's turn in the hub, whenever its subscription is woken (see
        :meth:`park`): write what is due without blocking, or finish."""
        if self._on_close is None:
            return
        writer = t.cast(ParkedWriter, self._parked)
        try:
            if self._timer is not None:
                self._timer.close()
                self._timer = None
            while not writer.broken:
                if writer.rest:
                    writer.drain(self._step)
                    return
                if self._finishing:
                    break
                subscription = self._subscription
                taken = subscription.taken
                out = self._next(subscription.take(), now := time.monotonic())
                if out is None:
                    self._finishing = True
                    if self._ended is not End.CLIENT:
                        writer.end()
                elif out:
                    writer.write(out)
                    self._wrote_live(out, subscription.taken - taken, now)
                else:
                    self._sleep(now)
                    return
            if writer.broken and self._ended is None:
                self._ended = End.CLIENT
        except Exception:
            log.exception("a parked stream failed; closing it")
        try:
            self.close()
        finally:
            writer.close()

    def _sleep(self, now: float) -> None:
        """Have a parked stream woken when its heartbeat or deadline is due: by the ticker
        while that is far off, as :meth:`_frames` waits, and by a timer near it."""
        due = self._due()
        if due - now > TICK:
            self._subscription.sleep_until(due - TICK)
        else:
            self._subscription.sleep_until(math.inf)
            self._timer = t.cast(ParkedWriter, self._parked).call_later(due - now, self._step)

    def _due(self) -> float:
        """When the stream must next write a heartbeat or end."""
        due = self._last_write + self._heartbeat
        return due if self._deadline is None else min(due, self._deadline)

    def _next(self, chunk: bytes, now: float) -> bytes | None:
        """What to write once a wait has given ``chunk``, at ``now``: the chunk, a
        heartbeat, ``b""`` (nothing yet), or ``None`` if the stream is to end."""
        if chunk:
            return chunk
        if self._subscription.closed is not None:
            return None
        if self._peer is not None and self._peer.client_gone():
            self._ended = End.CLIENT
            return None
        if self._deadline is not None and now >= self._deadline:
            self._ended = End.LIFETIME
            return None
        if now - self._last_write >= self._heartbeat:
            return _HEARTBEAT
        return b""

    def _wrote_live(self, out: bytes, frames: int, now: float) -> None:
        """Count a live write of ``out`` (``frames`` events, or a heartbeat); after events,
        hold the subscription (:meth:`Subscription.hold`)."""
        if out is not _HEARTBEAT:
            self._subscription.hold()
        self._wrote(len(out), frames)
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

    def move(self, sock: socket.socket) -> None:
        """Watch ``sock`` from now on: the same connection, whose socket a parked stream's
        writer took over (its descriptor, which the watcher watches, is the same)."""
        self._sock = self._raw = sock

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
