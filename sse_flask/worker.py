"""sse-flask's gunicorn worker class: gunicorn's gevent worker, with publishers writing to
waiting event streams themselves.

gunicorn sends a response by iterating it, so each event reaches a client only after the
publisher has woken the stream's greenlet and the stream has handed the frame to gunicorn.
For an event fanned out to 10,000 streams, that costs each stream about as much as the
system call that sends the frame. Under this worker, a publish sends the frame to each
stream that is waiting with nothing queued, without blocking, framed as gunicorn frames
the body; whatever the socket does not take at once is left to the stream's greenlet.

Once a stream's opening is written, the worker parks it (:meth:`EventStream.park
<sse_flask.stream.EventStream.park>`): the connection's greenlet returns to gunicorn with
``ALREADY_HANDLED``, the stream owns the OS socket (:class:`_ParkedSocket`), and gevent's hub
runs it from callbacks, so an idle stream keeps no greenlet's stack and none of gunicorn's
per-request objects. It keeps its connection's place in ``worker_connections``
(:class:`_StreamPool`).

Like ``wsgi.file_wrapper``, it only applies to an :class:`~sse_flask.stream.EventStream`
that reaches gunicorn as the application returned it: a middleware that wraps the body
gets it iterated, as under any other server. TLS listeners and HTTP/2 responses are left
alone too, since the socket then carries more than the body's bytes.

Use it with ``gunicorn -k sse_flask.worker.GeventWorker``; ``sse-flask serve`` and the
project's ``gunicorn.conf.py`` do.

This module is also the adapter to what the direct writes, :mod:`sse_flask.stream`'s watch
on the client's socket and :mod:`sse_flask.tasks` use of gunicorn and gevent beyond their
documented API: gunicorn's ``Response`` behind ``start_response`` (its socket, framing and
byte count), the OS socket inside gevent's (``_sock``), the hub's OS thread
(``thread_ident``), the name ``Pool`` in gunicorn's ``ggevent`` module (from which its
``run()`` makes the pools) and gevent's ``Pool._semaphore``. They were
checked with the versions in :data:`CHECKED_WITH`, which a test pins. Under other versions
the worker says so in its log when it boots; where one of them is missing, it says that
too and leaves every stream to gunicorn's own write path (or, without ``Pool``, to its
greenlet), which still delivers every event.
"""

from __future__ import annotations

import logging
import socket
import typing as t
from datetime import datetime

import gevent
import gunicorn
from gevent import get_hub
from gevent.monkey import get_original
from gevent.pool import Pool
from gunicorn.http.wsgi import Response
from gunicorn.workers import ggevent
from gunicorn.workers.base_async import ALREADY_HANDLED
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["CHECKED_WITH", "GeventWorker", "IOWatcher", "hub_thread", "os_thread", "watch_socket"]

#: The gunicorn and gevent versions whose internals this module was checked against.
#: tests/test_adapter.py fails when the installed ones differ: check what this module uses
#: of them (the names in :data:`_RESPONSE_INTERNALS`, ``_sock``, ``thread_ident``) again,
#: then update it.
CHECKED_WITH = {"gunicorn": "27.0.1", "gevent": "26.9.0"}
#: What a direct write uses of gunicorn's ``Response``, beyond what WSGI gives: set by its
#: constructor, and ``status_code`` by ``start_response``, which an application has called
#: by the time it returns its body unwrapped.
_RESPONSE_INTERNALS: tuple[str, ...] = ("sock", "chunked", "sent", "response_length", "status_code")
#: The calling OS thread's id, as ``threading.get_ident`` gives it without gevent's patching
#: (which makes it the greenlet's); looked up once, since gevent's lookup costs more than
#: the call.
os_thread: t.Callable[[], int] = get_original("_thread", "get_ident")
#: The socket class without gevent's patching: a parked stream's socket is written to by
#: the hub's callbacks, never waited on.
_os_socket: type[socket.socket] = get_original("socket", "socket")
_FALLBACK = "event streams are left to gunicorn's own writes (every event still goes out)"
_NO_PARKING = "idle event streams keep their greenlets (every event still goes out)"

_log = logging.getLogger("sse_flask")


class IOWatcher(t.Protocol):
    """What :func:`watch_socket`'s watcher offers: gevent's public watcher API."""

    def start(self, callback: t.Callable[[], None]) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


class _Parkable(t.Protocol):
    """What parking uses of :class:`sse_flask.stream.EventStream`."""

    def parks(self) -> bool: ...
    def opening(self) -> t.Iterator[bytes]: ...
    def park(self, writer: t.Any) -> None: ...
    def close(self) -> None: ...


class _Logger(t.Protocol):
    def warning(self, msg: str, *args: object) -> None: ...


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's ``gevent`` worker, offering each event stream a :class:`_SocketWriter`,
    and parking it (:meth:`EventStream.park <sse_flask.stream.EventStream.park>`) once its
    opening is written."""

    wsgi: WSGIApplication

    def load_wsgi(self) -> None:
        super().load_wsgi()
        _check_versions(self.log)
        thread = hub_thread()
        if thread is None:
            self.log.warning("gevent's hub.thread_ident is missing: %s", _FALLBACK)
        elif not self.cfg.is_ssl:
            self.wsgi = _offer_writers(self.wsgi, self.log, thread)

    def run(self) -> None:
        # gunicorn's run() makes each listener's pool of connection greenlets from the
        # name Pool in its module; _StreamPool also counts the parked streams.
        if getattr(ggevent, "Pool", None) is Pool:
            ggevent.Pool = _StreamPool
        else:
            self.log.warning("gunicorn.workers.ggevent.Pool is not gevent's Pool: %s", _NO_PARKING)
        super().run()

    def is_already_handled(self, respiter: object) -> bool:
        # A parked stream's connection is its own now: end gunicorn's keep-alive loop.
        if respiter is ALREADY_HANDLED:
            raise StopIteration
        return False


class _StreamPool(Pool):  # type: ignore[misc]
    """gevent's pool of a listener's connection greenlets, in which a parked stream keeps
    its connection's place after its greenlet returns: ``worker_connections`` still bounds
    a worker's clients, and a stopping worker still waits for its streams to end."""

    #: Every such pool in this process: the worker's, one per listener.
    pools: t.ClassVar[list[_StreamPool]] = []

    def __init__(self, size: int | None = None, greenlet_class: t.Any = None) -> None:
        super().__init__(size, greenlet_class)
        self.parked = 0
        _StreamPool.pools.append(self)

    def free_count(self) -> int:
        if self.size is None:
            return 1
        return max(0, int(self.size) - len(self) - self.parked)

    @classmethod
    def place(cls) -> _StreamPool | None:
        """The pool of the calling greenlet, having given its stream a place of its own;
        ``None`` if it has none (not a pool's greenlet, or the pool is full)."""
        current = gevent.getcurrent()
        pool = next((pool for pool in cls.pools if current in pool), None)
        return pool if pool is not None and pool._take_place() else None

    def _take_place(self) -> bool:
        if not self._semaphore.acquire(blocking=False):
            return False
        self.parked += 1
        return True

    def give_back(self) -> None:
        """A parked stream has ended: its place is free again."""
        self.parked -= 1
        self._semaphore.release()


def hub_thread() -> int | None:
    """The OS thread that this thread's gevent hub runs in (``None`` if the hub does not
    say), for the callers that must tell the hub's thread from others."""
    return getattr(get_hub(), "thread_ident", None)


def watch_socket(sock: socket.socket) -> tuple[socket.socket, IOWatcher]:
    """For a stream's watch on its client under gevent: the OS socket inside gevent's
    ``sock``, to peek at without gevent waiting for it, and an unstarted watcher of its
    readability (``loop.io``, gevent's public loop API)."""
    return getattr(sock, "_sock", sock), get_hub().loop.io(sock.fileno(), 1)


def _check_versions(log: _Logger) -> None:
    """Log a warning if gunicorn or gevent is not the version :data:`CHECKED_WITH` names."""
    running = {"gunicorn": gunicorn.__version__, "gevent": gevent.__version__}
    if running != CHECKED_WITH:
        log.warning(
            "sse_flask.worker was checked with gunicorn %s and gevent %s, and runs under "
            "gunicorn %s and gevent %s: publishers still write to waiting streams while the "
            "internals they use are there; if one is missing, the log says so and %s",
            CHECKED_WITH["gunicorn"],
            CHECKED_WITH["gevent"],
            running["gunicorn"],
            running["gevent"],
            _FALLBACK,
        )


#: What a parked stream needs for gunicorn's access log line: the logger, the environ and
#: when the request started.
_Access = tuple[t.Any, "WSGIEnvironment", datetime]


class _Missing(Exception):
    """A gunicorn or gevent internal that the direct writes need is not there."""


def _offer_writers(
    app: WSGIApplication, log: t.Any = _log, thread: int | None = None
) -> WSGIApplication:
    """``app``, giving a :class:`_SocketWriter` to each event stream it returns as is (a
    body whose class takes one, ``write_through``), for a plain 200 response to a GET over
    HTTP/1.x; in one of :class:`_StreamPool`'s greenlets, writing the stream's opening and
    parking it instead (:func:`_park`). The first internal found missing is logged, and no
    stream gets a writer after it.

    :param log: gunicorn's logger, whose access log a parked stream writes to as it ends.
    :param thread: the OS thread of gevent's hub; by default, the calling thread's hub's.
    """
    hub = hub_thread() if thread is None else thread
    fallen_back = False
    logs = getattr(log, "access_log_enabled", False)

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        nonlocal fallen_back
        started = datetime.now() if logs else None
        body = app(environ, start_response)
        offer = getattr(type(body), "write_through", None)
        if offer is not None and not fallen_back and environ["REQUEST_METHOD"] != "HEAD":
            try:
                writer = _socket_writer(start_response, hub)
            except _Missing as e:
                fallen_back = True
                log.warning("%s is missing: %s", e, _FALLBACK)
            else:
                if writer is not None:
                    stream = t.cast(_Parkable, body)
                    if stream.parks() and (pool := _StreamPool.place()) is not None:
                        access = None if started is None else (log, environ, started)
                        return _park(stream, writer, pool, access)
                    offer(body, writer)
        return body

    return application


def _park(
    body: _Parkable,
    writer: _SocketWriter,
    pool: _StreamPool,
    access: _Access | None,
) -> t.Iterable[bytes]:
    """Write ``body``'s opening through gunicorn's response, blocking this greenlet, then take
    the client's socket from gevent's and park the stream on it: gunicorn's
    :data:`ALREADY_HANDLED`, after which the worker leaves the connection alone. The headers
    say ``Connection: close``: the stream closes the connection when it ends."""
    response = t.cast(Response, writer.response)
    response.force_close()
    try:
        for chunk in body.opening():
            response.write(chunk)
        sock = response.sock
        family, kind, proto = sock.family, sock.type, sock.proto
        raw = _os_socket(family, kind | socket.SOCK_NONBLOCK, proto, sock.detach())
    except BaseException:
        pool.give_back()
        body.close()
        raise
    body.park(_ParkedSocket(raw, writer, pool, access))
    return t.cast("t.Iterable[bytes]", ALREADY_HANDLED)


def _socket_writer(start_response: StartResponse, thread: int | None) -> _SocketWriter | None:
    """A writer to the socket of the response that ``start_response`` starts, if that is
    gunicorn's HTTP/1.x ``Response`` exactly (HTTP/2 subclasses it) of a 200 without a
    length; raises :class:`_Missing` naming an internal it needs that is not there."""
    response: t.Any = getattr(start_response, "__self__", None)
    if response is None:
        raise _Missing("start_response.__self__ (gunicorn's Response)")
    if type(response) is not Response:
        return None
    for name in _RESPONSE_INTERNALS:
        if not hasattr(response, name):
            raise _Missing(f"gunicorn's Response.{name}")
    if response.status_code != 200 or response.response_length is not None:
        return None
    raw = getattr(response.sock, "_sock", None)
    if raw is None:
        # gevent's own send would wait for a full socket, blocking the publisher.
        raise _Missing("the OS socket inside gevent's (_sock)")
    return _SocketWriter(response, raw.send, thread, chunked=response.chunked)


class _SocketWriter:
    """Sends a stream's frames to its client without blocking, as gunicorn's ``response``
    would write them: one chunk per call, under chunked transfer encoding.

    Only its :class:`EventStream` uses it, once gunicorn has sent the headers and while the
    stream waits, so nothing else writes to the socket meanwhile.
    """

    __slots__ = ("_chunked", "_hub_thread", "_send", "_sock", "response", "rest")

    def __init__(
        self,
        response: Response | None,
        send: t.Callable[[bytes], int],
        thread: int | None,
        *,
        chunked: bool,
    ) -> None:
        #: What the socket did not take of the last chunk; the stream writes it, blocking,
        #: before anything else.
        self.rest = b""
        #: gunicorn's response, counting the body's bytes in ``sent`` (for its access log).
        self.response = response
        self._chunked = chunked
        self._sock = response.sock if response is not None else None
        self._send = send
        self._hub_thread = thread

    def send(self, data: bytes) -> bool:
        """Send ``data`` as one chunk if the socket takes any of it at once; ``False`` if
        nothing went out (the socket is full or closed, or the caller is on another OS
        thread)."""
        if self.rest or os_thread() != self._hub_thread:
            return False
        chunk = self._chunk(data)
        try:
            sent = self._send(chunk)
        except OSError:
            # Full (EAGAIN) or gone: the stream's own write waits, or finds out.
            return False
        if self.response is not None:
            self.response.sent += len(data)
        if sent < len(chunk):
            self.rest = chunk[sent:]
        return True

    def _chunk(self, data: bytes) -> bytes:
        return b"%X\r\n%s\r\n" % (len(data), data) if self._chunked else data

    def flush(self) -> None:
        """Write :attr:`rest`, blocking only the calling greenlet."""
        rest, self.rest = self.rest, b""
        t.cast(socket.socket, self._sock).sendall(rest)


class _ParkedSocket(_SocketWriter):
    """A parked stream's writer (:class:`~sse_flask.stream.ParkedWriter`): the client's OS
    socket, taken from gevent's, written to without blocking from the hub."""

    __slots__ = ("_access", "_drained", "_pool", "_watcher", "broken", "sock")

    def __init__(
        self,
        sock: socket.socket,
        writer: _SocketWriter,
        pool: _StreamPool,
        access: _Access | None,
    ) -> None:
        # gunicorn's response is kept only for its access log, which needs it at the end.
        response = writer.response if access is not None else None
        super().__init__(response, sock.send, writer._hub_thread, chunked=writer._chunked)
        self.sock = sock
        self.broken = False
        self._pool: _StreamPool | None = pool
        self._access = access
        self._watcher: t.Any = None
        self._drained: t.Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        self._write(self._chunk(data))
        if self.response is not None:
            self.response.sent += len(data)

    def end(self) -> None:
        if self._chunked:
            self._write(b"0\r\n\r\n")

    def drain(self, callback: t.Callable[[], None]) -> None:
        self._drained = callback
        if self._watcher is None:
            self._watcher = get_hub().loop.io(self.sock.fileno(), 2)
            self._watcher.start(self._on_writable)

    def call_later(self, seconds: float, callback: t.Callable[[], None]) -> t.Any:
        timer = get_hub().loop.timer(max(seconds, 0.0))
        timer.start(callback)
        return timer

    def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self.sock.close()
        pool.give_back()
        if self._access is not None:
            log, environ, started = self._access
            response = t.cast(Response, self.response)
            log.access(response, response.req, environ, datetime.now() - started)

    def _write(self, chunk: bytes) -> None:
        """Send ``chunk``, keeping what the socket does not take; mark the socket broken if
        the client is gone."""
        if self.rest:
            self.rest += chunk
            return
        try:
            sent = self.sock.send(chunk)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True
            return
        self.rest = chunk[sent:]

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self.rest)
        except BlockingIOError:
            return
        except OSError:
            self.broken = True
            sent = len(self.rest)
        self.rest = self.rest[sent:]
        if self.rest:
            return
        self._watcher.close()
        self._watcher = None
        callback, self._drained = self._drained, None
        if callback is not None:
            callback()
