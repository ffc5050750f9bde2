"""The idle soak: many idle streams on a fresh server, and its memory sampled over time."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import selectors
import socket
import time
import typing as t
from pathlib import Path

from .launch import Timeout, log, start_server


def soak(
    kind: str, options: argparse.Namespace, workdir: Path, deadline: float
) -> dict[str, t.Any]:
    """Open ``--soak-streams`` idle streams and sample the server's RSS for ``--soak-seconds``."""
    with contextlib.ExitStack() as cleanup:
        server, _ = start_server(kind, options, workdir, cleanup, f"soak-{kind}")
        workers = server.workers
        # A publish and a few streams per worker first, kept open, so that the baseline holds
        # what a worker loads once (its Redis reader, its ticker), not per stream.
        with contextlib.closing(
            http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        ) as connection:
            connection.request(
                "POST",
                "/say",
                json.dumps({"data": "warm-up"}),
                {"Content-Type": "application/json"},
            )
            assert connection.getresponse().status == 200
        selector = selectors.DefaultSelector()
        cleanup.callback(selector.close)

        def open_streams(count: int) -> None:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock.sendall(b"GET /events?channel=soak HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                cleanup.callback(sock.close)

        open_streams(8 * workers)
        time.sleep(1)
        baseline = server.rss()
        count = options.soak_streams
        open_streams(count)
        opened = time.monotonic()
        samples = []
        interval = options.soak_interval or max(1.0, options.soak_seconds / 60)
        next_sample = opened + min(interval, 2.0)
        closed = 0
        while time.monotonic() < opened + options.soak_seconds:
            if time.monotonic() > deadline:
                raise Timeout("--timeout ran out during the soak")
            for key, _ in selector.select(0.2):
                data = b""
                with contextlib.suppress(OSError):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    selector.unregister(key.fileobj)
                    closed += 1
            if time.monotonic() >= next_sample:
                rss = server.rss()
                samples.append(
                    {
                        "seconds": round(time.monotonic() - opened, 1),
                        "rss_mib": round(rss / 2**20, 1),
                        "per_stream_kib": round((rss - baseline) / count / 1024, 2),
                    }
                )
                next_sample += interval
                if interval >= 10:
                    log(f"{kind} soak: {samples[-1]}")
        if not samples:
            rss = server.rss()
            samples.append(
                {
                    "seconds": round(time.monotonic() - opened, 1),
                    "rss_mib": round(rss / 2**20, 1),
                    "per_stream_kib": round((rss - baseline) / count / 1024, 2),
                }
            )
    first, last = samples[0]["per_stream_kib"], samples[-1]["per_stream_kib"]
    # Settled: after the first round of heartbeats (each stream's first write after the
    # retry allocates a little), from which on idle memory should not move.
    settled_at = min(60.0, options.soak_seconds / 4)
    settled = next(
        (sample["per_stream_kib"] for sample in samples if sample["seconds"] >= settled_at), last
    )
    return {
        "broker": kind,
        "workers": workers,
        "streams": count,
        "seconds": options.soak_seconds,
        "baseline_rss_mib": round(baseline / 2**20, 1),
        "per_stream_kib_first": first,
        "per_stream_kib_last": last,
        "growth_percent": round(100 * (last - first) / first, 1) if first else None,
        "per_stream_kib_settled": settled,
        "settled_at_seconds": settled_at,
        "growth_since_settled_percent": round(100 * (last - settled) / settled, 1)
        if settled
        else None,
        "streams_closed_by_server": closed,
        "samples": samples,
    }
