"""What ``SSE_REDIS_WAIT_REPLICAS`` costs a publish: publishes a second, and latency, through
the Redis broker with and without ``WAIT`` for one replica.

    python benchmarks/wait_replicas.py                 # 5,000 publishes each way
    python benchmarks/wait_replicas.py --count 20000 --json

A run-by-hand benchmark, not a test (tests/test_sentinel.py checks the behaviour). It starts a
``redis-server`` primary and a replica of it on free ports of 127.0.0.1 (and the Sentinels
that watch them), publishes to the primary from one thread (each publish waits for its
answer, as ``/say`` does), and stops them all at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import procs

from sse_flask.broker.redis import RedisBroker
from sse_flask.events import Event, encode_event


def measure(url: str, wait_replicas: int, count: int) -> dict[str, t.Any]:
    """Publish ``count`` events of 100 bytes; return publishes a second and latency in ms."""
    broker = RedisBroker(url, history=1000, wait_replicas=wait_replicas)
    frame = encode_event(Event(data="x" * 100))
    latencies = []
    try:
        for _ in range(count // 10):  # warm-up: connections, script cache
            broker.publish("bench", frame)
        started = time.perf_counter()
        for _ in range(count):
            before = time.perf_counter()
            broker.publish("bench", frame)
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
    finally:
        broker.close()
    latencies.sort()
    return {
        "wait_replicas": wait_replicas,
        "publishes_per_second": round(count / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="publishes each way")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            group = procs.Sentinels(Path(workdir))
            results = [measure(group.primary.url, wait, options.count) for wait in (0, 1)]
        finally:
            procs.stop_all()
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print("| SSE_REDIS_WAIT_REPLICAS | publishes/s | p50 | p99 |\n|---|---|---|---|")
        for row in results:
            print(
                f"| {row['wait_replicas']} | {row['publishes_per_second']:,} | {row['p50_ms']} ms"
                f" | {row['p99_ms']} ms |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
