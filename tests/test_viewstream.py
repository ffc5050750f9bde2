"""``sse.stream(items)``, live: a view's own stream on ``sse-flask serve`` (gevent, sse-flask's
worker class), on gunicorn's own ``-k gevent`` worker and on Flask's dev server (threads),
each started by the test on an ephemeral port, serving ``tests/apps/viewstreams.py``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from flask import Flask
from helpers.servers import Server
from helpers.wait import wait_until

from sse_flask import SSE

HEARTBEAT = 1.0
SERVERS = ["sse-flask serve", "gunicorn -k gevent", "flask run"]
#: Seconds from a client's leaving to its items closed and the request torn down: at once
#: where the server sees the socket close, else within the next heartbeat (plus slack).
CLOSE_BOUND = {"sse-flask serve": 2.0, "gunicorn -k gevent": 2.0, "flask run": HEARTBEAT + 2.0}
#: Seconds the never-ending items pause between two: under gevent, far longer than the
#: bound, so that only closing them where they wait meets it; on threads, where a running
#: step cannot be interrupted, shorter.
PAUSE = {"sse-flask serve": 60, "gunicorn -k gevent": 60, "flask run": 0.1}

SLOW_BODY = (
    b"retry: 3000\n"
    b"id: 1\ndata: one\n\n"
    b'id: 2\ndata: {"n":2}\n\n'
    b"id: own\nevent: custom\ndata: three\n\n"
    b'id: 4\nevent: done\ndata: {"items":3}\n\n'
)


class ViewServer(t.NamedTuple):
    kind: str
    url: str
    log: t.Callable[[], str]
    notes: Path

    def happened(self) -> list[str]:
        return self.notes.read_text().splitlines() if self.notes.exists() else []


@pytest.fixture(params=SERVERS)
def view_server(
    request: pytest.FixtureRequest,
    serve: t.Callable[..., Server],
    launch: t.Callable[..., Server],
    tmp_path: Path,
) -> ViewServer:
    notes = tmp_path / "happened.log"
    env = {"SSE_HEARTBEAT": str(HEARTBEAT), "VIEWSTREAM_LOG": str(notes)}
    app = "apps.viewstreams:create_app"
    if request.param == "sse-flask serve":
        server = serve(app=app, env=env)
        return ViewServer(request.param, server.url, server.log, notes)
    if request.param == "gunicorn -k gevent":
        process = launch("gevent", app, env=env)
    else:
        process = launch("flask", app, "--with-threads", env=env)
    return ViewServer(request.param, process.url, process.log, notes)


def read_all(
    method: str, url: str, **kwargs: t.Any
) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    """The whole body, chunk by chunk with the seconds since the request; returns once the
    server has ended the stream."""
    started = time.monotonic()
    chunks = []
    with httpx.stream(method, url, timeout=10, **kwargs) as response:
        for chunk in response.iter_raw():
            chunks.append((time.monotonic() - started, chunk))
    return response, chunks


def without_heartbeats(body: bytes) -> bytes:
    return body.replace(b": heartbeat\n", b"")


def test_heartbeats_while_items_are_slow_then_the_items_then_done(view_server: ViewServer) -> None:
    response, chunks = read_all("GET", f"{view_server.url}/slow?delay=2.5")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    body = b"".join(chunk for _, chunk in chunks)
    before_items = body[: body.index(b"id: 1\n")]
    assert before_items.count(b": heartbeat\n") >= 2, body
    first_item = next(at for at, chunk in chunks if b"id: 1\n" in chunk)
    assert first_item >= 2.4
    # Every heartbeat came while the items slept, none later than a heartbeat apart.
    beats = [at for at, chunk in chunks if b": heartbeat" in chunk]
    assert all(
        later - earlier <= HEARTBEAT + 0.75
        for earlier, later in zip([0.0, *beats], [*beats, first_item])
    )
    assert without_heartbeats(body) == SLOW_BODY


def test_post_streams_what_the_body_asked_for(view_server: ViewServer) -> None:
    words = ["multi\nline", "ünï", "", "end"]
    response, chunks = read_all("POST", f"{view_server.url}/slow", json={"words": words})
    assert response.status_code == 200
    assert without_heartbeats(b"".join(chunk for _, chunk in chunks)) == (
        b"retry: 3000\n"
        b"id: 1\ndata: multi\ndata: line\n\n"
        + "id: 2\ndata: ünï\n\n".encode()
        + b"id: 3\ndata: \n\n"
        b"id: 4\ndata: end\n\n"
        b'id: 5\nevent: done\ndata: {"items":4}\n\n'
    )


def test_items_run_in_the_request_context(view_server: ViewServer) -> None:
    _, chunks = read_all("GET", f"{view_server.url}/context?q=asked")
    assert without_heartbeats(b"".join(chunk for _, chunk in chunks)) == (
        b"retry: 3000\nid: 1\ndata: asked\n\nid: 2\ndata: apps.viewstreams\n\n"
        b'id: 3\nevent: done\ndata: {"items":2}\n\n'
    )


def test_an_exception_sends_a_safe_error_and_ends(view_server: ViewServer) -> None:
    _, chunks = read_all("GET", f"{view_server.url}/fails")
    body = without_heartbeats(b"".join(chunk for _, chunk in chunks))
    assert body == (
        b"retry: 3000\nid: 1\ndata: before\n\n"
        b"id: 2\nevent: error\n"
        b'data: {"error":"the stream failed on the server; '
        b"the details are in the server's log\"}\n\n"
    )
    wait_until(
        lambda: "RuntimeError: a secret detail of the server" in view_server.log(),
        5,
        "the traceback in the log",
    )


def test_a_departed_client_closes_the_items_and_tears_the_request_down(
    view_server: ViewServer,
) -> None:
    host, port = view_server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"GET /forever?pause={PAUSE[view_server.kind]} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    received = b""
    while b"id: 1\n" not in received:
        received += sock.recv(65536)
    [acquired] = [line for line in view_server.happened() if line.startswith("acquired")]
    resource = acquired.split()[1]
    assert view_server.happened() == [acquired]
    assert consumers(view_server) == 1
    left = time.monotonic()
    sock.close()
    done = [f"finally {resource}", f"teardown_request {resource}", f"released {resource}"]
    wait_until(
        lambda: view_server.happened() == [acquired, *done],
        10,
        "the items' finally and the request's teardown",
    )
    took = time.monotonic() - left
    assert took <= CLOSE_BOUND[view_server.kind], f"{took:.2f} s under {view_server.kind}"
    wait_until(lambda: consumers(view_server) == 0, 10, "/stats to count the stream no more")


def consumers(view_server: ViewServer) -> int:
    """The open streams ``/stats`` counts."""
    return int(httpx.get(f"{view_server.url}/stats", timeout=10).json()["consumers"])


def test_stream_outside_a_request_says_where_to_call_it() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    with app.app_context(), pytest.raises(RuntimeError, match="call it in a view"):
        sse.stream(["x"])


def test_concurrent_streams_from_the_start_each_get_their_own_items(
    view_server: ViewServer,
) -> None:
    """Twenty streams asked for at once on a fresh server, each its own items: nothing in the
    view streams' set-up may block the worker (a lock made before gevent patched would)."""
    host, port = view_server.url.removeprefix("http://").split(":")
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.create_connection((host, int(port)), timeout=10))
            for _ in range(20)
        ]
        ask_and_check(socks)


def ask_and_check(socks: list[socket.socket]) -> None:
    """Ask each socket for its own words, then check that each got them, then done."""
    for number, sock in enumerate(socks):
        body = json.dumps({"words": [f"{number}-{each}" for each in range(20)]}).encode()
        head = "POST /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
    for number, sock in enumerate(socks):
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        expected = "".join(f"id: {i + 1}\ndata: {number}-{i}\n\n" for i in range(20)).encode()
        assert expected + b'id: 21\nevent: done\ndata: {"items":20}\n\n' in dechunk(received)


def dechunk(response: bytes) -> bytes:
    """The body of an HTTP/1.1 response, chunked or ended by the close."""
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return body
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        out, body = out + rest[:length], rest[length + 2 :]
    return out
