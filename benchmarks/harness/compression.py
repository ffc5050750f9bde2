"""What ``SSE_COMPRESS`` saves: the same JSON events read by two streams of one sse_flask
server, one sent ``Accept-Encoding: gzip`` and one not, counting the body bytes each got.

Events are published 10 ms apart, more than the server's write interval, so that each goes
out in a write of its own with its own sync flush: the case that compresses worst.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import typing as t
import zlib
from pathlib import Path

import requests

from . import procs
from .servers import PEERS

__all__ = ["KINDS", "measure"]

#: Event data by kind: the benchmark's own small events, and a dashboard-like update.
KINDS: dict[str, t.Callable[[int], t.Any]] = {
    "benchmark event {t, s}": lambda n: {"t": 1_700_000_000_000 + n * 997, "s": n},
    "order update, about 300 bytes": lambda n: {
        "type": "order.updated",
        "order": {
            "id": 100_000 + n,
            "status": ("paid", "packed", "shipped", "delivered")[n % 4],
            "items": [{"sku": f"SKU-{n % 37:04d}", "quantity": 1 + n % 3, "price": 19.99}],
            "customer": {"id": 5_000 + n % 200, "name": "Ada Lovelace", "country": "GB"},
        },
        "updated_at": f"2026-11-21T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
    },
}


def measure(workdir: Path, *, events: int = 500, cpu: int | None = None) -> list[dict[str, t.Any]]:
    """Per kind of event: bytes received without and with gzip, and events decoded from each."""
    port = procs.free_port()
    server = procs.start(
        "sse_flask-gzip",
        [
            sys.executable,
            "-m",
            "sse_flask",
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        cpu=cpu,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SSE_COMPRESS": "1"},
        cwd=PEERS,
        log=workdir / "sse_flask-gzip.server.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        procs.wait_for(lambda: _answers(base + "/stats"), 30, "the gzip server to answer")
        return [_one_kind(base, title, make, events) for title, make in KINDS.items()]
    finally:
        server.stop()


def _one_kind(
    base: str, title: str, make: t.Callable[[int], t.Any], events: int
) -> dict[str, t.Any]:
    channel = f"gzip-{len(title)}-{time.monotonic_ns()}"
    readers = {encoding: _Reader(base, channel, encoding) for encoding in ("identity", "gzip")}
    procs.wait_for(
        lambda: requests.get(base + "/stats", timeout=5).json()["channels"].get(channel) == 2,
        10,
        "both streams",
    )
    with requests.Session() as session:
        for n in range(1, events + 1):
            session.post(
                base + "/say", json={"data": make(n), "channel": channel}, timeout=10
            ).raise_for_status()
            time.sleep(0.01)
    for reader in readers.values():
        reader.wait_for(events)
    plain, packed = readers["identity"], readers["gzip"]
    return {
        "kind": title,
        "events": events,
        "bytes_plain": plain.body_bytes,
        "bytes_gzip": packed.body_bytes,
        "events_plain": plain.events(),
        "events_gzip": packed.events(),
        "saving": 1 - packed.body_bytes / plain.body_bytes,
    }


class _Reader(threading.Thread):
    """One stream, read as raw body bytes (de-chunked, not decompressed)."""

    def __init__(self, base: str, channel: str, encoding: str) -> None:
        super().__init__(daemon=True)
        self.encoding = encoding
        self.response = requests.get(
            base + "/events",
            params={"channel": channel},
            headers={"Accept-Encoding": encoding},
            stream=True,
            timeout=30,
        )
        self.response.raise_for_status()
        got = self.response.headers.get("Content-Encoding", "identity")
        if got != encoding:
            raise RuntimeError(f"asked for {encoding}, the server answered Content-Encoding {got}")
        self.chunks: list[bytes] = []
        self.body_bytes = 0
        self.start()

    def run(self) -> None:
        try:
            while chunk := self.response.raw.read1(65536, decode_content=False):
                self.chunks.append(chunk)
                self.body_bytes += len(chunk)
        except Exception:  # the stream is closed under us at the end
            pass

    def text(self) -> str:
        body = b"".join(self.chunks)
        if self.encoding == "gzip":
            body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
        return body.decode()

    def events(self) -> int:
        return sum(1 for line in self.text().splitlines() if line.startswith("data: "))

    def wait_for(self, events: int) -> None:
        procs.wait_for(
            lambda: self.events() >= events, 30, f"{events} events on the {self.encoding} stream"
        )
        self.response.close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False
