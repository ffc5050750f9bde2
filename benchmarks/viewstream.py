"""Per-request streams: ``sse.stream`` against sse-starlette's and FastAPI's
``EventSourceResponse`` on uvicorn. Run by hand, not in the tests::

    pip install -e . -r benchmarks/requirements.txt
    python benchmarks/viewstream.py [--streams 1000] [--items 100]

Each server runs as one process (one gunicorn worker for sse-flask) pinned to core 0; the
client (asyncio on uvloop, raw sockets) runs here, pinned to core 1. For each server:

- throughput: ``--streams`` concurrent ``GET /items?n=ITEMS``, each yielding its items as
  fast as it can; items/s delivered (all items over the time from the first request to the
  last stream's end), and the p99 latency of an item (received minus sent, one clock);
- memory: ``--streams`` streams held open (``GET /hold``: one item, then nothing), the
  server's RSS growth over its idle RSS, per stream;
- time to close: the client closes every held stream at once; the time from its close to
  the generator's ``finally`` (median and max), as the server recorded it.

The server apps are ``benchmarks/peers/viewstream_flask.py`` and ``viewstream_asgi.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import typing as t
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import procs

PEERS = Path(__file__).resolve().parent / "peers"
SERVER_CORE, CLIENT_CORE = 0, 1
ROWS = ["sse-flask", "sse-starlette", "FastAPI"]


def server_argv(row: str, port: int) -> list[str]:
    if row == "sse-flask":
        return [sys.executable, "-m", "sse_flask", "serve", "--bind", f"127.0.0.1:{port}",
                "--workers", "1", "--app", "viewstream_flask:create_app"]  # fmt: skip
    app = "viewstream_asgi:" + ("starlette_app" if row == "sse-starlette" else "fastapi_app")
    return [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--log-level", "warning", "--no-access-log",
            "--backlog", "4096"]  # fmt: skip


def start_server(row: str, log: Path) -> tuple[procs.Proc, int, list[int]]:
    """The server, its port and the pids that serve (the worker for sse-flask)."""
    port = procs.free_port()
    env = {**os.environ, "SSE_HEARTBEAT": "60", "PYTHONPATH": str(PEERS)}
    proc = procs.start(row, server_argv(row, port), cpu=SERVER_CORE, env=env, cwd=PEERS, log=log)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/closed", timeout=2):
                return True
        except OSError:
            return False

    procs.wait_for(answers, 30, f"{row} to answer")
    serving = [pid for pid in procs.session_pids(proc.pid) if pid != proc.pid] or [proc.pid]
    return proc, port, serving


async def read_stream(port: int, path: str, latencies: list[float] | None) -> int:
    """Read ``path`` to its end; the items' count, and each one's latency into ``latencies``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    items = 0
    pending = b""
    while chunk := await reader.read(65536):
        now = time.time()
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.startswith(b"data: ") and not line.startswith(b"data: {"):
                items += 1
                if latencies is not None:
                    latencies.append(now - float(line[6:].strip(b'"\r')))
    writer.close()
    return items


async def throughput(port: int, streams: int, count: int) -> dict[str, float]:
    latencies: list[float] = []
    started = time.monotonic()
    path = f"/items?n={count}"
    counts = await asyncio.gather(*(read_stream(port, path, latencies) for _ in range(streams)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "items": sum(counts),
        "items_per_second": sum(counts) / elapsed,
        "p99_latency_ms": latencies[int(len(latencies) * 0.99)] * 1000
        if latencies
        else float("nan"),
    }


async def hold_and_leave(port: int, streams: int, serving: list[int]) -> dict[str, float]:
    idle = procs.rss_bytes(serving)
    opened = []
    for key in range(streams):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /hold?id={key} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        opened.append((key, reader, writer))

    async def first_item(reader: asyncio.StreamReader) -> None:
        received = b""
        while b"data: " not in received:
            received += await reader.read(65536)

    await asyncio.wait_for(asyncio.gather(*(first_item(reader) for _, reader, _ in opened)), 60)
    held = procs.rss_bytes(serving)
    left = {}
    for key, _, writer in opened:
        writer.transport.abort()
        left[str(key)] = time.time()
    await asyncio.sleep(0)
    deadline = time.monotonic() + 30
    closed: dict[str, float] = {}
    while len(closed) < streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        closed = json.loads(await asyncio.to_thread(_get, port, "/closed"))
    delays = sorted(closed[key] - left[key] for key in closed if key in left)
    return {
        "bytes_per_stream": (held - idle) / streams,
        "closed": len(closed),
        "close_median_ms": statistics.median(delays) * 1000 if delays else float("nan"),
        "close_max_ms": delays[-1] * 1000 if delays else float("nan"),
    }


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return t.cast(bytes, response.read())


def measure(row: str, streams: int, count: int, logs: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    for phase in ("throughput", "hold"):
        proc, port, serving = start_server(row, logs / f"{row}-{phase}.log")
        try:
            if phase == "throughput":
                figures.update(asyncio.run(throughput(port, streams, count)))
            else:
                figures.update(asyncio.run(hold_and_leave(port, streams, serving)))
        finally:
            proc.stop()
    return figures


def table(results: dict[str, dict[str, float]], streams: int, count: int) -> str:
    base = results["sse-flask"]
    rows = [
        ("items/s delivered", "items_per_second", "{:,.0f}", True),
        ("p99 item latency (ms)", "p99_latency_ms", "{:,.1f}", False),
        ("memory per held stream (KiB)", "bytes_per_stream", "{:,.1f}", False),
        ("disconnect to generator closed, median (ms)", "close_median_ms", "{:,.1f}", False),
        ("disconnect to generator closed, max (ms)", "close_max_ms", "{:,.1f}", False),
    ]
    peers = [row for row in results if row != "sse-flask"]
    lines = [
        f"{streams:,} concurrent streams x {count} items; each server on one core",
        "",
        "| figure | "
        + " | ".join(results)
        + " | "
        + " | ".join(f"sse-flask vs {peer}" for peer in peers)
        + " |",
        "|---" * (1 + len(results) + len(peers)) + "|",
    ]
    for label, key, fmt, higher in rows:
        scale = 1 / 1024 if key == "bytes_per_stream" else 1

        def ratio(peer: str, key: str = key, higher: bool = higher) -> str:
            ours, theirs = base[key], results[peer][key]
            if not ours or not theirs:
                return "-"
            return f"{(ours / theirs if higher else theirs / ours):.2f}x"

        cells = [fmt.format(results[row][key] * scale) for row in results]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratio(peer) for peer in peers)
            + " |"
        )
    lines.append("")
    lines.append("Ratios: how many times better sse-flask is (above 1x: ahead).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument(
        "--only", default=",".join(ROWS), help="comma-separated rows, sse-flask first"
    )
    parser.add_argument("--logs", type=Path, default=Path("/tmp/sse-flask-viewstream-bench"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {CLIENT_CORE})
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = {}
    try:
        for row in args.only.split(","):
            results[row] = measure(row, args.streams, args.items, args.logs)
            print(row, {key: round(value, 2) for key, value in results[row].items()}, flush=True)
    finally:
        procs.stop_all()
    print()
    print(table(results, args.streams, args.items))


if __name__ == "__main__":
    main()
