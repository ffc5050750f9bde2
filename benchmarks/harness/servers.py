"""The servers compared, each with the same three routes.

``GET /events`` streams, ``POST /say`` takes JSON ``{"data": ...}`` and publishes it, and
``GET /stats`` answers JSON with ``consumers``, the streams the server has registered (the
load generator waits on it before publishing). sse_flask has these routes already; each
peer in ``peers/`` implements them in its own straightforward way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import typing as t
from pathlib import Path

__all__ = ["BENCH_DIR", "PEERS", "SERVERS", "Server", "build_go", "sse_flask_argv"]

BENCH_DIR = Path(__file__).resolve().parent.parent
PEERS = BENCH_DIR / "peers"

_GUNICORN_GEVENT = [
    "-k",
    "gevent",
    "--workers",
    "1",
    # Room for 10,000 streams plus the publishers and /stats.
    "--worker-connections",
    "20000",
    "--keep-alive",
    "5",
    "--no-control-socket",
    "--chdir",
    str(PEERS),
]


@dataclasses.dataclass(frozen=True)
class Server:
    """How to start one server on ``127.0.0.1:<port>``."""

    name: str
    title: str
    #: (port, redis URL or None, built Go binaries) -> argv
    argv: t.Callable[[int, str | None, dict[str, Path]], list[str]]
    redis: bool = False
    env: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: the sse_flask rows, whose figures are compared with every peer
    ours: bool = False
    #: resumes a stream from ``Last-Event-ID`` (the storm waits for the replay)
    replays: bool = False
    #: measured by a plain run; the others only when named with --only
    default: bool = True

    def environ(self, redis_url: str | None) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if redis_url is not None:
            env["REDIS_URL"] = redis_url
        return env


def _sse_flask(port: int, redis_url: str | None, _: dict[str, Path]) -> list[str]:
    return sse_flask_argv(port, redis_url, 1)


def sse_flask_argv(port: int, redis_url: str | None, workers: int) -> list[str]:
    """``sse-flask serve`` on ``127.0.0.1:port`` with ``workers`` workers."""
    argv = [
        sys.executable,
        "-m",
        "sse_flask",
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    return argv + (["--broker", redis_url] if redis_url else [])


def _sse_flask_under(
    worker_class: str,
) -> t.Callable[[int, str | None, dict[str, Path]], list[str]]:
    """sse_flask's own gunicorn settings, under one of gunicorn's gevent worker classes
    instead of sse_flask's."""

    def argv(port: int, redis_url: str | None, _: dict[str, Path]) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "-c", str(BENCH_DIR.parent / "gunicorn.conf.py"), "-k", worker_class,
            "--workers", "1", "--bind", f"127.0.0.1:{port}", "sse_flask.demo:create_app()",
        ]  # fmt: skip

    return argv


def _gunicorn(module: str) -> t.Callable[[int, str | None, dict[str, Path]], list[str]]:
    def argv(port: int, redis_url: str | None, _: dict[str, Path]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            *_GUNICORN_GEVENT,
            "--bind",
            f"127.0.0.1:{port}",
            module,
        ]

    return argv


def _uvicorn(port: int, redis_url: str | None, _: dict[str, Path]) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "starlette_app:app", "--app-dir", str(PEERS),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--backlog", "4096",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def _go(port: int, redis_url: str | None, binaries: dict[str, Path]) -> list[str]:
    return [str(binaries["goserver"]), "-addr", f"127.0.0.1:{port}"]


SERVERS: dict[str, Server] = {
    server.name: server
    for server in [
        Server("sse_flask", "sse_flask (in-process broker)", _sse_flask, ours=True, replays=True),
        Server(
            "sse_flask-redis",
            "sse_flask (Redis broker)",
            _sse_flask,
            redis=True,
            ours=True,
            replays=True,
        ),
        Server("go", "Go net/http, channel per client", _go, env={"GOMAXPROCS": "1"}),
        Server("flask-queue", "Flask + queue.Queue, gunicorn gevent", _gunicorn("flask_queue:app")),
        Server("sse-starlette", "sse-starlette on uvicorn (uvloop, httptools)", _uvicorn),
        Server(
            "flask-sse",
            "flask-sse (Redis pub/sub), gunicorn gevent",
            _gunicorn("flask_sse_app:app"),
            redis=True,
        ),
        Server(
            "sse_flask-gevent",
            "sse_flask on gunicorn's gevent worker",
            _sse_flask_under("gevent"),
            replays=True,
            default=False,
        ),
        Server(
            "sse_flask-pywsgi",
            "sse_flask on gunicorn's gevent_pywsgi worker",
            _sse_flask_under("gevent_pywsgi"),
            replays=True,
            default=False,
        ),
    ]
}


def build_go(cache: Path) -> dict[str, Path]:
    """Build the load generator and the Go peer into ``cache``; return their paths.

    Standard library only: ``GOPROXY=off`` makes sure nothing is downloaded.

    :raises RuntimeError: if ``go`` is missing or a build fails.
    """
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            "the Go toolchain is needed for the load generator: apt-get install -y golang-go"
        )
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    env.setdefault("GOCACHE", str(cache / "go-build"))
    # One binary per checkout: a run from another worktree must not replace this run's
    # binaries while it uses them.
    checkout = hashlib.sha256(str(BENCH_DIR).encode()).hexdigest()[:12]
    built = {}
    for name, source in (("loadgen", BENCH_DIR / "loadgen"), ("goserver", PEERS / "go")):
        target = cache / f"{name}-{checkout}"
        result = subprocess.run(
            [go, "build", "-o", str(target), "."],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"go build in {source} failed:\n{result.stderr}")
        built[name] = target
    return built
