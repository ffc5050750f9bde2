"""``SSE_COMPRESS``: gzip per stream when the client accepts it, flushed after each write
so that every event can be decoded as soon as it arrives."""

from __future__ import annotations

import json
import socket
import time
import typing as t
import zlib

from helpers.servers import Server
from helpers.sse import StreamClient


def raw_body(server: Server, accept_gzip: bool) -> tuple[socket.socket, bytes]:
    """Open /events over HTTP/1.0 (no chunked framing); return the socket and the head."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    accept = "Accept-Encoding: gzip\r\n" if accept_gzip else ""
    sock.sendall(f"GET /events HTTP/1.0\r\nHost: x\r\n{accept}\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, rest = received.partition(b"\r\n\r\n")
    return sock, head + b"\r\n\r\n" + rest


def test_each_event_decodes_on_arrival(serve: t.Callable[..., Server]) -> None:
    server = serve(env={"SSE_COMPRESS": "true", "SSE_HEARTBEAT": "30"})
    sock, received = raw_body(server, accept_gzip=True)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Vary: Accept-Encoding" in head
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = decoder.decompress(body)
    deadline = time.monotonic() + 10
    while b"retry:" not in text:
        text += decoder.decompress(sock.recv(65536))
    for n in range(5):
        server.say({"n": n})
        while f'{{"n":{n}}}'.encode() not in text:  # decodable without waiting for more
            assert time.monotonic() < deadline, text
            text += decoder.decompress(sock.recv(65536))
    sock.close()


def test_a_real_client_decodes_it(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient]
) -> None:
    """httpx asks for gzip by default and httpx-sse parses what it decodes."""
    server = serve(env={"SSE_COMPRESS": "1"})
    client = stream(server.url)
    assert client.response.headers["content-encoding"] == "gzip"
    sent = [{"order": n, "status": "shipped", "items": ["a", "b"]} for n in range(10)]
    for data in sent:
        server.say(data)
    assert [json.loads(e.data) for e in client.take(10)] == sent


def test_plain_without_accept_encoding_and_smaller_with_it(serve: t.Callable[..., Server]) -> None:
    """Clients that do not accept gzip get the plain stream; JSON events shrink with gzip."""
    server = serve(env={"SSE_COMPRESS": "yes"})
    plain, plain_received = raw_body(server, accept_gzip=False)
    packed, packed_received = raw_body(server, accept_gzip=True)
    assert b"Content-Encoding" not in plain_received.partition(b"\r\n\r\n")[0]
    for n in range(50):
        server.say({"order": n, "status": "shipped", "customer": "someone@example.com"})
    plain_body = plain_received.partition(b"\r\n\r\n")[2]
    packed_body = packed_received.partition(b"\r\n\r\n")[2]
    decoder = zlib.decompressobj(31)
    unpacked = decoder.decompress(packed_body)
    deadline = time.monotonic() + 10
    while plain_body.count(b'"status":"shipped"') < 50:
        assert time.monotonic() < deadline
        plain_body += plain.recv(65536)
    while unpacked.count(b'"status":"shipped"') < 50:
        assert time.monotonic() < deadline
        chunk = packed.recv(65536)
        packed_body += chunk
        unpacked += decoder.decompress(chunk)
    plain.close()
    packed.close()
    assert len(packed_body) < len(plain_body) / 2, (len(packed_body), len(plain_body))
