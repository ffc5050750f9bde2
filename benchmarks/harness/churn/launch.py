"""What a churn run starts and watches: ``sse-flask serve`` with either broker, a fresh
``redis-server``, the server's peak memory and the tracebacks in its log; and the run's log
line and its time limit."""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from harness import procs

REPO = Path(__file__).resolve().parents[3]


class Timeout(Exception):
    """The run went past --timeout."""


def start_server(
    kind: str, options: argparse.Namespace, workdir: Path, cleanup: contextlib.ExitStack, name: str
) -> tuple[procs.Gunicorn, procs.Redis | procs.Sentinels | None]:
    """``sse-flask serve`` with the ``kind`` of broker: one worker with the in-process broker,
    ``--workers`` sharing a fresh ``redis-server`` with Redis, or a primary and a replica behind
    three Sentinels with ``sentinel`` (each publish waiting for the replica:
    ``SSE_REDIS_WAIT_REPLICAS=1``); ``cleanup`` stops them."""
    redis: procs.Redis | procs.Sentinels | None = None
    if kind != "memory" and not shutil.which("redis-server"):
        raise SystemExit(
            "redis-server is not installed (apt-get install redis-server); use --broker memory"
        )
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
    if kind == "redis":
        redis = procs.Redis(workdir / f"redis-{name}.log")
        redis.start()
        cleanup.callback(redis.stop)
    elif kind == "sentinel":
        directory = workdir / f"sentinel-{name}"
        directory.mkdir(exist_ok=True)
        redis = procs.Sentinels(directory)
        cleanup.callback(redis.stop)
        environ["SSE_REDIS_WAIT_REPLICAS"] = "1"
    workers = 1 if kind == "memory" else options.workers
    argv = [
        sys.executable,
        "-m",
        "sse_flask",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        str(workers),
    ]
    if redis is not None:
        argv += ["--broker", redis.url]
    server = procs.Gunicorn(
        "sse-flask",
        argv,
        workers=workers,
        log=workdir / f"gunicorn-{name}.log",
        env={**environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
    )
    cleanup.callback(server.stop)
    return server, redis


def tracebacks(log: str) -> dict[str, int]:
    """The tracebacks in a server's log, counted by their last line (the exception)."""
    found: collections.Counter[str] = collections.Counter()
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            ending = next(
                (later for later in lines[number + 1 :] if later and not later.startswith(" ")), "?"
            )
            found[ending[:200]] += 1
    return dict(found)


class Sampler(threading.Thread):
    """Samples a server's RSS every ``interval`` seconds, keeping the peak."""

    def __init__(self, server: procs.Gunicorn, interval: float = 0.25) -> None:
        super().__init__(name="rss sampler", daemon=True)
        self.server = server
        self.interval = interval
        self.peak = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.peak = max(self.peak, self.server.rss())

    def stop(self) -> int:
        self._stopping.set()
        self.join(5)
        return self.peak


def log(message: str) -> None:
    print(f"[churn {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
