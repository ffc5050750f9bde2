"""sse-flask's gunicorn worker class (sse_flask.worker): publishers write to waiting streams.

The cases on its parts (functions of tests/patched/worker_cases.py) run in a fresh
interpreter that monkey-patches first, as the worker does, with requests parsed and answered
by gunicorn's own classes over a socket pair. The wire is checked against real gunicorn: here
behind a body-wrapping middleware, over TLS, and to a client that reads late; elsewhere, every
test that reads a stream through ``sse-flask serve`` goes through this worker, and
test_stream.py decodes its chunked framing strictly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import httpx
import httpx_sse
import pytest
import requests
from helpers.env import need
from helpers.patched import run_case
from helpers.servers import Server
from helpers.sse import RawStream
from helpers.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent

#: Each case's description (its test id), and its function in tests/patched/worker_cases.py.
CASES = {
    "a stream answering GET over HTTP/1.1 or 1.0 gets a writer": "writer_for_get",
    "no writer for HEAD, for a gzipped stream, or for a body a middleware wrapped": "no_writer",
    "a frame goes out at once as one chunk, counted in gunicorn's response": (
        "frame_goes_out_at_once"
    ),
    "over HTTP/1.0 a frame goes out as it is": "http_1_0_frame_as_it_is",
    "what the socket does not take is kept, nothing passes it, and flush writes it": (
        "rest_is_kept_and_flushed"
    ),
    "a full socket takes nothing, and nothing is kept": "full_socket_takes_nothing",
    "a closed client takes nothing": "closed_client_takes_nothing",
    "a publish reaches a waiting stream without waking it, and what arrives while it is held goes out in one chunk": (
        "publish_reaches_a_waiting_stream"
    ),
    "another OS thread than the hub's sends nothing": "other_thread_sends_nothing",
}


@pytest.mark.parametrize("case", list(CASES))
def test_worker_parts(case: str) -> None:
    run_case(f"worker_cases:{CASES[case]}")


def test_a_middleware_that_wraps_the_body_sees_every_byte(serve: t.Callable[..., Server]) -> None:
    """Under a middleware that wraps the stream's body, frames are not written past it: the
    bytes it passed on are exactly those the client read (HTTP/1.0, so no chunk framing)."""
    server = serve(app="apps.wrapped_body:create_app", env={"SSE_HEARTBEAT": "30"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /events HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        while b"retry:" not in received:
            received += sock.recv(65536)
        wait_until(
            lambda: requests.get(server.url + "/stats", timeout=5).json()["consumers"] == 1,
            10,
            "the stream",
        )
        for n in range(5):
            requests.get(server.url + "/say", params={"msg": f"m{n}"}, timeout=5).raise_for_status()
        deadline = time.monotonic() + 10
        while received.count(b"data: m") < 5 and time.monotonic() < deadline:
            received += sock.recv(65536)
        assert received.count(b"data: m") == 5, received
        body = received.partition(b"\r\n\r\n")[2]
        assert requests.get(server.url + "/passed", timeout=5).json() == {"bytes": len(body)}


def test_idle_streams_keep_no_greenlet(serve: t.Callable[..., Server]) -> None:
    """Once their opening is written, streams are parked: 30 idle streams leave the worker
    with no more greenlets than it needs for itself, and each still gets every event, a
    heartbeat, and its end (the last chunk, then the connection closed, as its headers said)
    when the worker stops."""
    server = serve(app="apps.greenlets_app:create_app", env={"SSE_HEARTBEAT": "1"})
    streams = [RawStream(server.port) for _ in range(30)]
    wait_until(lambda: server.stats()["consumers"] == 30, 10, "the streams")
    head = streams[0].wait_for(lambda s: s.headers, 10, "the response head")
    assert head["connection"] == "close", "a parked stream closes its connection at its end"
    alive = server.get("/greenlets").json()["greenlets"]
    assert alive < 10, f"{alive} greenlets for 30 idle streams"
    for n in range(3):
        server.say(f"parked {n}")

    def texts(stream: RawStream) -> list[str]:
        return [event["data"] for event in stream.events()]

    for stream in streams:
        stream.wait_for(lambda s: len(texts(s)) == 3 and s.comments(), 10, "events, a heartbeat")
        assert texts(stream) == [f"parked {n}" for n in range(3)]
    server.stop()
    for stream in streams:
        stream.wait_closed(10)
        assert stream.ended, "the body's last chunk"
        stream.close()


def test_parked_streams_keep_their_place_among_worker_connections(
    launch: t.Callable[..., Server],
) -> None:
    """A parked stream still counts in gunicorn's ``worker_connections``: with room for 3,
    a fourth connection waits until one of 3 streams ends, then is served."""
    server = launch(
        "sse_flask.worker.GeventWorker", "sse_flask.demo:create_app",
        "-c", "python:sse_flask.gunicorn_conf",
        "--worker-connections", "3",
    )  # fmt: skip

    def consumers() -> int:
        answer = requests.get(server.url + "/stats", headers={"Connection": "close"}, timeout=10)
        return int(answer.json()["consumers"])

    streams = [RawStream(server.port)]
    wait_until(lambda: consumers() == 1, 10, "the first stream")
    streams.append(RawStream(server.port))
    wait_until(lambda: consumers() == 2, 10, "the second stream")
    streams.append(RawStream(server.port))
    streams[2].read_until(b"retry:")
    waiting: list[int] = []
    asking = threading.Thread(target=lambda: waiting.append(consumers()))
    asking.start()
    asking.join(1.5)
    assert not waiting, "a fourth connection was served beside 3 streams"
    streams[0].close()
    asking.join(10)
    assert waiting == [2]
    for stream in streams[1:]:
        stream.close()


def test_a_parked_stream_has_its_access_log_line_when_it_ends(
    launch: t.Callable[..., Server],
) -> None:
    """gunicorn's access log gets one line for a parked stream, once it has ended, with every
    body byte the client read (the event sent by the publisher, the heartbeat by the stream)."""
    server = launch(
        "sse_flask.worker.GeventWorker", "sse_flask.demo:create_app",
        "-c", "python:sse_flask.gunicorn_conf", "--access-logfile", "-",
        env={"SSE_HEARTBEAT": "0.3"},
    )  # fmt: skip
    request = '"GET /events HTTP/1.1" 200 '
    stream = RawStream(server.port)
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "the stream")
    server.say("logged")
    stream.wait_for(lambda s: s.events() and s.comments(), 10, "the event and a heartbeat")
    assert request not in server.log(), "logged before the stream ended"
    stream.close()
    line = wait_until(
        lambda: next((line for line in server.log().splitlines() if request in line), None),
        10,
        "the access log line",
    )
    assert int(line.partition(request)[2].split()[0]) == len(stream.body), line


def test_streams_over_tls_are_left_to_gunicorn(tmp_path: Path) -> None:
    """On a TLS listener the worker offers no writer (a raw send would bypass TLS): events
    arrive intact through gunicorn started with the project's gunicorn.conf.py."""
    need("openssl", shutil.which("openssl"))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", "127.0.0.1:0",
             "--certfile", str(cert), "--keyfile", str(key), "sse_flask.demo:create_app()"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        )  # fmt: skip
    try:
        port = int(
            wait_until(
                lambda: re.search(
                    r"Listening at: https://127\.0\.0\.1:(\d+)", log_path.read_text()
                ),
                30,
                "gunicorn",
            ).group(1)
        )
        url = f"https://127.0.0.1:{port}"
        wait_until(lambda: "Worker ready" in log_path.read_text(), 30, "the worker")
        with (
            httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as client,
            httpx_sse.connect_sse(client, "GET", url + "/events") as source,
        ):
            events = source.iter_sse()
            for n in range(3):
                client.get(url + "/say", params={"msg": f"tls {n}"}).raise_for_status()
            received = [next(events) for _ in range(3)]
            assert [event.data for event in received] == ["tls 0", "tls 1", "tls 2"]
            assert received[0].retry == 3000, "the opening retry: comes with the first event"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_a_client_that_reads_late_gets_every_byte_in_order(serve: t.Callable[..., Server]) -> None:
    """A client with a tiny receive buffer that reads nothing while 100 events of 60 KB go out
    (more than the 4 MB that Linux lets a send buffer grow to by default):
    sends that the socket takes in part, the rest written by the stream, frames queued and
    sent meanwhile. Once it reads, every event arrives whole and in order, in valid chunks."""
    server = serve(env={"SSE_HEARTBEAT": "30"})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"retry:" not in received:
            received += sock.recv(4096)
        wait_until(lambda: server.stats()["consumers"] == 1, 10, "the stream")
        sent = [f"{n:03d}" + "x" * 60_000 for n in range(100)]
        for data in sent:
            server.say(data)
        while not received.endswith(f"data: {sent[-1]}\n\n\r\n".encode()):
            received += sock.recv(1 << 20)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    frames = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        length = int(size, 16)
        assert body[length : length + 2] == b"\r\n", "a chunk is not followed by CRLF"
        frames, body = frames + body[:length], body[length + 2 :]
    delivered = [line[6:].decode() for line in frames.split(b"\n") if line.startswith(b"data: ")]
    assert delivered == sent
