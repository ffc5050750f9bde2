"""sse-flask's gunicorn worker class: gunicorn's gevent worker, with publishers writing to
waiting event streams themselves.

gunicorn sends a response by iterating it, so each event reaches a client only after the
publisher has woken the stream's greenlet and the stream has handed the frame to gunicorn.
For an event fanned out to 10,000 streams, that costs each stream about as much as the
system call that sends the frame. Under this worker, a publish sends the frame to each
stream that is waiting with nothing queued, without blocking, framed as gunicorn frames
the body; whatever the socket does not take at once is left to the stream's greenlet.

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
(``thread_ident``). They were
checked with the versions in :data:`CHECKED_WITH`, which a test pins. Under other versions
the worker says so in its log when it boots; where one of them is missing, it says that
too and leaves every stream to gunicorn's own write path, which still delivers every event.
"""

from __future__ import annotations

import logging
import socket
import typing as t

import gevent
import gunicorn
from gevent import get_hub
from gevent.monkey import get_original
from gunicorn.http.wsgi import Response
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
_FALLBACK = "event streams are left to gunicorn's own writes (every event still goes out)"

_log = logging.getLogger("sse_flask")


class IOWatcher(t.Protocol):
    """What :func:`watch_socket`'s watcher offers: gevent's public watcher API."""

    def start(self, callback: t.Callable[[], None]) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


class _Logger(t.Protocol):
    def warning(self, msg: str, *args: object) -> None: ...


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's ``gevent`` worker, offering each event stream a :class:`_SocketWriter`."""

    wsgi: WSGIApplication

    def load_wsgi(self) -> None:
        super().load_wsgi()
        _check_versions(self.log)
        thread = hub_thread()
        if thread is None:
            self.log.warning("gevent's hub.thread_ident is missing: %s", _FALLBACK)
        elif not self.cfg.is_ssl:
            self.wsgi = _offer_writers(self.wsgi, self.log, thread)


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


class _Missing(Exception):
    """A gunicorn or gevent internal that the direct writes need is not there."""


def _offer_writers(
    app: WSGIApplication, log: _Logger = _log, thread: int | None = None
) -> WSGIApplication:
    """``app``, giving a :class:`_SocketWriter` to each event stream it returns as is (a
    body whose class takes one, ``write_through``), for a plain 200 response to a GET over
    HTTP/1.x. The first internal found missing is logged, and no stream gets one after it.

    :param thread: the OS thread of gevent's hub; by default, the calling thread's hub's.
    """
    hub = hub_thread() if thread is None else thread
    fallen_back = False

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        nonlocal fallen_back
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
                    offer(body, writer)
        return body

    return application


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
    return _SocketWriter(response, raw.send, thread)


class _SocketWriter:
    """Sends a stream's frames to its client without blocking, as gunicorn's ``response``
    would write them: one chunk per call, under chunked transfer encoding.

    Only its :class:`EventStream` uses it, once gunicorn has sent the headers and while the
    stream waits, so nothing else writes to the socket meanwhile.
    """

    __slots__ = ("_hub_thread", "_response", "_send", "_sock", "rest")

    def __init__(
        self, response: Response, send: t.Callable[[bytes], int], thread: int | None
    ) -> None:
        #: What the socket did not take of the last chunk; the stream writes it, blocking,
        #: before anything else.
        self.rest = b""
        self._response = response
        self._sock = response.sock
        self._send = send
        self._hub_thread = thread

    def send(self, data: bytes) -> bool:
        """Send ``data`` as one chunk if the socket takes any of it at once; ``False`` if
        nothing went out (the socket is full or closed, or the caller is on another OS
        thread)."""
        if self.rest or os_thread() != self._hub_thread:
            return False
        response = self._response
        chunk = b"%X\r\n%s\r\n" % (len(data), data) if response.chunked else data
        try:
            sent = self._send(chunk)
        except OSError:
            # Full (EAGAIN) or gone: the stream's own write waits, or finds out.
            return False
        response.sent += len(data)
        if sent < len(chunk):
            self.rest = chunk[sent:]
        return True

    def flush(self) -> None:
        """Write :attr:`rest`, blocking only the calling greenlet."""
        rest, self.rest = self.rest, b""
        self._sock.sendall(rest)
