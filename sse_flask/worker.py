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
"""

from __future__ import annotations

import typing as t

from gevent import get_hub
from gevent.monkey import get_original
from gunicorn.http.wsgi import Response
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from .stream import EventStream

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["GeventWorker"]


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's ``gevent`` worker, offering each event stream a :class:`_SocketWriter`."""

    wsgi: WSGIApplication

    def load_wsgi(self) -> None:
        super().load_wsgi()
        if not self.cfg.is_ssl:
            self.wsgi = _offer_writers(self.wsgi)


def _offer_writers(app: WSGIApplication) -> WSGIApplication:
    """``app``, giving a :class:`_SocketWriter` to each event stream it returns as is, for a
    plain 200 response to a GET over HTTP/1.x (``Response`` exactly: HTTP/2 subclasses it)."""

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        body = app(environ, start_response)
        response: t.Any = getattr(start_response, "__self__", None)
        if (
            type(body) is EventStream
            and type(response) is Response
            and getattr(response, "status_code", None) == 200  # None: start_response not called yet
            and response.response_length is None
            and environ["REQUEST_METHOD"] != "HEAD"
        ):
            body.write_through(_SocketWriter(response))
        return body

    return application


class _SocketWriter:
    """Sends a stream's frames to its client without blocking, as gunicorn's ``response``
    would write them: one chunk per call, under chunked transfer encoding.

    Only its :class:`EventStream` uses it, once gunicorn has sent the headers and while the
    stream waits, so nothing else writes to the socket meanwhile.
    """

    __slots__ = ("_hub_thread", "_response", "_send", "_sock", "_thread", "rest")

    def __init__(self, response: Response) -> None:
        #: What the socket did not take of the last chunk; the stream writes it, blocking,
        #: before anything else.
        self.rest = b""
        self._response = response
        self._sock = response.sock
        self._send = getattr(response.sock, "_sock", response.sock).send
        self._thread = get_original("_thread", "get_ident")
        self._hub_thread = get_hub().thread_ident

    def send(self, data: bytes) -> bool:
        """Send ``data`` as one chunk if the socket takes any of it at once; ``False`` if
        nothing went out (the socket is full or closed, or the caller is on another OS
        thread)."""
        if self.rest or self._thread() != self._hub_thread:
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
