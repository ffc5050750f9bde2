"""The parts of sse-flask's gunicorn worker class (sse_flask.worker) under gevent's
monkey-patching, with requests parsed and answered by gunicorn's own classes over a socket
pair; run by tests/test_worker.py, one case per fresh patched interpreter."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import typing as t

import gevent
from gevent import monkey
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from sse_flask.broker.wakeup import GreenletWakeup
from sse_flask.demo import create_app
from sse_flask.stream import EventStream
from sse_flask.worker import _offer_writers

app = create_app()

STREAM_REQUEST = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"


def answer(request: bytes, application: t.Any = app) -> tuple[t.Any, t.Any, socket.socket]:
    """Parse ``request`` as gunicorn does and call the application through the worker's
    wrapper; return the body, gunicorn's response and the client's end of the socket."""
    server, client = socket.socketpair()
    client.sendall(request)
    cfg = Config()
    req = next(RequestParser(cfg, server, ("127.0.0.1", 1)))
    response, environ = wsgi.create(req, server, ("127.0.0.1", 1), ("127.0.0.1", 2), cfg)
    return _offer_writers(application)(environ, response.start_response), response, client


def open_stream(
    request: bytes = STREAM_REQUEST,
) -> tuple[EventStream, t.Iterator[bytes], t.Any, socket.socket]:
    """A stream whose headers and retry: gunicorn's response has sent; return it, the rest of
    its body, the response and the client's end of the socket."""
    body, response, client = answer(request)
    assert isinstance(body, EventStream)
    frames = iter(body)
    response.write(next(frames))
    head = b""
    while not head.endswith(b"retry: 3000\n" + (b"\r\n" if response.chunked else b"")):
        head += client.recv(4096)
    return body, frames, response, client


def writer_of(request: bytes = STREAM_REQUEST) -> tuple[t.Any, t.Any, socket.socket]:
    body, _, response, client = open_stream(request)
    return body._writer, response, client


def receive(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += client.recv(65536)
    return data


def writer_for_get() -> None:
    for version in (b"1.1", b"1.0"):
        body, _, _ = answer(b"GET /events HTTP/" + version + b"\r\nHost: x\r\n\r\n")
        assert isinstance(body, EventStream) and body._writer is not None, version
        body.close()


def no_writer() -> None:
    body, _, _ = answer(b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert getattr(body, "_writer", None) is None  # Flask drops a HEAD's body itself
    body.close()
    os.environ["SSE_COMPRESS"] = "1"
    gzipped = create_app()
    body, _, _ = answer(
        b"GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", gzipped
    )
    assert isinstance(body, EventStream) and body._writer is None
    body.close()

    def wrapping(environ: t.Any, start_response: t.Any) -> t.Iterator[bytes]:
        return (chunk for chunk in app.wsgi_app(environ, start_response))

    body, _, _ = answer(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n", wrapping)
    assert not isinstance(body, EventStream)
    body.close()
    body, _, _ = answer(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not isinstance(body, EventStream)


def frame_goes_out_at_once() -> None:
    writer, response, client = writer_of()
    sent = response.sent
    assert writer.send(b"data: x\n\n")
    assert receive(client, 14) == b"9\r\ndata: x\n\n\r\n"
    assert response.sent == sent + 9 and writer.rest == b""


def http_1_0_frame_as_it_is() -> None:
    writer, response, client = writer_of(b"GET /events HTTP/1.0\r\nHost: x\r\n\r\n")
    assert not response.chunked
    assert writer.send(b"data: x\n\n")
    assert receive(client, 9) == b"data: x\n\n"


def rest_is_kept_and_flushed() -> None:
    writer, _, client = writer_of()
    frame = b"data: " + b"x" * 2_000_000 + b"\n\n"
    assert writer.send(frame)
    assert writer.rest, "a socket pair takes less than 2 MB at once"
    assert not writer.send(b"data: later\n\n")
    chunk = b"%X\r\n" % len(frame) + frame + b"\r\n"
    reader = gevent.spawn(receive, client, len(chunk))
    writer.flush()
    assert writer.rest == b"" and reader.get(timeout=10) == chunk


def full_socket_takes_nothing() -> None:
    writer, response, _ = writer_of()
    raw = response.sock._sock
    try:
        while True:
            raw.send(b"x" * 65536)
    except BlockingIOError:
        pass
    assert not writer.send(b"data: x\n\n")
    assert writer.rest == b""


def closed_client_takes_nothing() -> None:
    writer, _, client = writer_of()
    client.close()
    assert not writer.send(b"data: x\n\n")


def publish_reaches_a_waiting_stream() -> None:
    body, frames, response, client = open_stream()
    server = gevent.spawn(lambda: [response.write(chunk) for chunk in frames])
    deadline = time.monotonic() + 5
    wakeup = body._subscription._wakeup
    assert isinstance(wakeup, GreenletWakeup)
    # Publish once the stream waits, with its writer offered to the fan-out.
    while wakeup._waiter is None or body._subscription.direct is None:
        assert time.monotonic() < deadline, "the stream never waited"
        gevent.sleep(0.001)
    sse = app.extensions["sse"].sse
    with app.app_context():
        for n in range(3):
            sse.publish(f"e{n}")
    received = b""
    while not received.endswith(b"data: e2\n\n\r\n"):
        received += client.recv(4096)
    chunks, rest = [], received
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        chunks.append(rest[: int(size, 16)])
        assert rest[int(size, 16) : int(size, 16) + 2] == b"\r\n"
        rest = rest[int(size, 16) + 2 :]
    assert [chunk.count(b"data: e") for chunk in chunks] == [1, 2], chunks
    assert body._subscription.taken == 0, "the stream's greenlet took frames itself"
    server.kill()


def other_thread_sends_nothing() -> None:
    writer, _, client = writer_of()
    results = []
    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    start_new_thread(lambda: results.append(writer.send(b"data: x\n\n")), ())
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert results == [False]
    client.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        assert client.recv(100) == b""
