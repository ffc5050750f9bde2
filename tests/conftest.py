"""Fixtures for tests against real parts: gunicorn with gevent workers started through
``sse-flask serve`` on an ephemeral port, a ``redis-server`` on a free port, and SSE
clients we did not write (httpx-sse, sseclient-py) beside raw sockets.

A missing real part (redis-server, Chromium) skips its tests locally and fails them when
``CI=true``, so that CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import typing as t
from pathlib import Path

import httpx
import httpx_sse
import hypothesis
import pytest
import requests

IN_CI = os.environ.get("CI") == "true"
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Locally, property tests explore new inputs on every run; in CI they replay the same ones,
# so that a submission is judged on what it changed, not on the luck of the draw.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    hypothesis.settings.load_profile("ci")


def need(what: str, available: object) -> None:
    """Skip (locally) or fail (in CI) unless ``available``."""
    if not available:
        if IN_CI:
            pytest.fail(f"{what} is missing, and CI must run every test")
        pytest.skip(f"{what} is missing")


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = 10.0, message: str = "") -> t.Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: No keep-alive: an idle kept-alive connection would hold a stopping worker until it times out.
_CLOSE = {"Connection": "close"}


class Server:
    """A running ``sse-flask serve`` (gunicorn, gevent workers), master in its own session.

    ``command`` replaces ``python -m sse_flask serve --bind 127.0.0.1:0 --workers N``
    (another console script, or plain gunicorn); ``args`` follow it.
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        workers: int,
        prefix: str = "",
        *,
        command: list[str] | None = None,
        cwd: Path = TESTS,
    ) -> None:
        self.log_path = log_path
        self.workers = workers
        #: Where the blueprint is mounted (the app's SSE_URL_PREFIX); get, post, say and
        #: stats are relative to it.
        self.prefix = prefix
        #: Sent as a bearer token by :meth:`say` when the server requires one.
        self.publish_token = env.get("SSE_PUBLISH_TOKEN")
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
        with open(log_path, "wb") as log:
            serve = [sys.executable, "-m", "sse_flask", "serve", "--bind", "127.0.0.1:0"]
            serve += ["--workers", str(workers)]
            self.process = subprocess.Popen(
                [*(command or serve), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base_env, "PYTHONUNBUFFERED": "1", **env},
                cwd=cwd,
                start_new_session=True,
            )
        try:
            match = wait_until(self._listening, 30, "gunicorn to listen")
            self.port = int(match.group(1))
            self.url = f"http://127.0.0.1:{self.port}"
            wait_until(lambda: len(self.worker_pids()) >= workers, 30, f"{workers} workers to boot")
            wait_until(self._healthy, 30, "/healthz to answer")
        except AssertionError as e:
            self.stop()
            pytest.fail(f"the server did not start ({e}); its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Workers serving (app loaded, signal handlers set) and not yet exited, oldest first.

        A worker that gunicorn has forked but not finished booting would lose a SIGTERM,
        so only workers that have logged "Worker ready" count.
        """
        log = self.log()
        exited = {int(pid) for pid in re.findall(r"Worker exiting \(pid: (\d+)\)", log)}
        ready = [int(pid) for pid in re.findall(r"Worker ready \(pid: (\d+)\)", log)]
        return [pid for pid in ready if pid not in exited and _alive(pid)]

    def get(self, path: str, **kwargs: t.Any) -> requests.Response:
        headers = {**_CLOSE, **kwargs.pop("headers", {})}
        return requests.get(self.url + self.prefix + path, timeout=10, headers=headers, **kwargs)

    def post(self, path: str, **kwargs: t.Any) -> requests.Response:
        headers = {**_CLOSE, **kwargs.pop("headers", {})}
        return requests.post(self.url + self.prefix + path, timeout=10, headers=headers, **kwargs)

    def say(self, data: t.Any = None, **fields: t.Any) -> str:
        """Publish over POST /say, with the server's publish token if it has one; return the
        event id."""
        headers = {"Authorization": f"Bearer {self.publish_token}"} if self.publish_token else {}
        response = self.post("/say", json={"data": data, **fields}, headers=headers)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def stats(self) -> dict[str, t.Any]:
        return dict(self.get("/stats").json())

    def reload(self) -> None:
        """Graceful reload (SIGHUP): new workers boot, old ones are sent SIGTERM."""
        old = set(self.worker_pids())
        self.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: not old & set(self.worker_pids()) and len(self.worker_pids()) >= self.workers,
            30,
            "workers to reload",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def _listening(self) -> re.Match[str] | None:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}")
        return re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())

    def _healthy(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return (
                requests.get(
                    self.url + self.prefix + "/healthz", timeout=2, headers=_CLOSE
                ).status_code
                == 200
            )
        return False


class Gunicorn(Server):
    """Plain ``gunicorn -k gevent`` serving ``app`` (``MODULE:VARIABLE`` or
    ``MODULE:FACTORY()``), as a user runs an app that mounts the blueprint, without
    ``sse-flask serve`` and its settings; ``args`` are more of gunicorn's options."""

    def __init__(self, app: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.workers = 1
        self.prefix = ""
        self.publish_token = env.get("SSE_PUBLISH_TOKEN")
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
        gunicorn = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", "127.0.0.1:0"]
        command = [*gunicorn, "--no-control-socket", *args, app]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base_env, "PYTHONUNBUFFERED": "1", **env},
                cwd=TESTS,
                start_new_session=True,
            )
        try:
            match = wait_until(self._listening, 30, "gunicorn to listen")
            self.port = int(match.group(1))
            self.url = f"http://127.0.0.1:{self.port}"
            wait_until(self._healthy, 30, "/healthz to answer")
        except AssertionError as e:
            self.stop()
            pytest.fail(f"gunicorn did not start ({e}); its log:\n{self.log()}")


@pytest.fixture
def gunicorn(tmp_path: Path) -> t.Iterator[t.Callable[..., Gunicorn]]:
    """Start plain gunicorn: ``gunicorn(app, *args, env={...})``; stopped at teardown."""
    servers: list[Gunicorn] = []

    def start(app: str, *args: str, env: dict[str, str] | None = None) -> Gunicorn:
        log_path = tmp_path / f"plain-gunicorn-{len(servers)}.log"
        servers.append(Gunicorn(app, list(args), env or {}, log_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()


@pytest.fixture
def serve(tmp_path: Path) -> t.Iterator[t.Callable[..., Server]]:
    """Start servers: ``serve(app=None, workers=1, broker=None, env={...})``; stopped at teardown.

    With ``SSE_URL_PREFIX`` in ``env``, the server's requests go under that prefix.

    ``app`` is a ``MODULE:FACTORY`` import string (``apps.<name>:create_app`` for the apps in
    ``tests/apps/``); ``env`` holds ``SSE_*`` settings for the workers.
    """
    servers: list[Server] = []

    def start(
        *,
        app: str | None = None,
        workers: int = 1,
        broker: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        args = (["--app", app] if app else []) + (["--broker", broker] if broker else [])
        env = env or {}
        server = Server(
            args,
            env,
            tmp_path / f"gunicorn-{len(servers)}.log",
            workers,
            env.get("SSE_URL_PREFIX", ""),
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: t.Callable[..., Server]) -> Server:
    """The demo app on one gevent worker, with a 1 s heartbeat."""
    return serve(env={"SSE_HEARTBEAT": "1"})


def _backend_ready() -> bool:
    """Whether setuptools can build a wheel here without pip fetching build requirements:
    ``bdist_wheel`` comes from the ``wheel`` package, or from setuptools itself since 70.1."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    version = importlib.metadata.version("setuptools").split(".")[:2]
    major, minor, *_ = (int(part) for part in version if part.isdigit())
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build a wheel of this checkout, once per test session; return it and the source tree
    it was built from.

    The sources are copied first, so that the build writes its ``build/`` and
    ``*.egg-info`` folders into a temporary directory, not into the checkout the editable
    install (and anyone else's test run) uses.
    """
    source = tmp_path_factory.mktemp("source") / "sse-flask"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            "tests",
            "benchmarks",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
            ".hypothesis",
            ".venv",
        ),
    )
    out = tmp_path_factory.mktemp("wheelhouse")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir"]
    if _backend_ready():
        command.append("--no-build-isolation")
    command += ["-w", str(out), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=out)
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (built,) = out.glob("sse_flask-*.whl")
    return built, source


@pytest.fixture(scope="session")
def installed(wheel: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed in it (not editable), as a newcomer has
    sse-flask after ``pip install``; returns its ``bin`` directory.

    Its dependencies are this environment's, reached through a ``.pth`` line (which runs
    none of the ``.pth`` files there, so the editable install of the checkout stays out).
    """
    venv = tmp_path_factory.mktemp("newcomer") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    result = subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", str(wheel[0])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    where = subprocess.run(
        [python, "-c", "import sse_flask; print(sse_flask.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=venv,
    )  # fmt: skip
    origin = Path(where.stdout.strip())
    assert origin.is_relative_to(purelib), f"sse_flask comes from {where.stdout}{where.stderr}"
    return venv / "bin"


class RedisServer:
    """A ``redis-server`` on a free port that tests may stop and restart: keeping nothing on
    disk, or with ``persistent`` every write in its append-only file before it answers."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._pong, 10, "redis-server to answer PING")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self) -> t.Any:
        import redis

        return redis.Redis.from_url(self.url)

    def _pong(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> t.Iterator[RedisServer]:
    need("redis-server", shutil.which("redis-server"))
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class StreamClient:
    """An event stream read with httpx-sse, a parser we did not write."""

    def __init__(
        self,
        url: str,
        *,
        channels: t.Sequence[str] = (),
        last_event_id: str | None = None,
        params: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        query = [("channel", channel) for channel in channels] + list((params or {}).items())
        self._client = httpx.Client(timeout=httpx.Timeout(timeout))
        self._context = httpx_sse.connect_sse(
            self._client, "GET", url + "/events", params=query, headers=headers
        )
        self.source = self._context.__enter__()
        self.response = self.source.response
        self._events = self.source.iter_sse()
        self.retry: int | None = None

    def take(self, count: int) -> list[httpx_sse.ServerSentEvent]:
        """The next ``count`` events; the last ``retry:`` seen is kept in :attr:`retry`."""
        events = [next(self._events) for _ in range(count)]
        for event in events:
            if event.retry is not None:
                self.retry = event.retry
        return events

    def rest(self) -> list[httpx_sse.ServerSentEvent]:
        """Every event a browser would dispatch until the server ends the stream."""
        events = []
        with contextlib.suppress(StopIteration):
            while True:
                events.extend(self.take(1))
        return events

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def stream() -> t.Iterator[t.Callable[..., StreamClient]]:
    """Open streams: ``stream(server.url, channels=[...], last_event_id=...)``; closed at teardown."""
    opened: list[StreamClient] = []

    def open_stream(url: str, **kwargs: t.Any) -> StreamClient:
        client = StreamClient(url, **kwargs)
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        with contextlib.suppress(Exception):
            client.close()


class RawStream:
    """A stream read over a plain socket, for exact bytes and for clients that misbehave."""

    def __init__(
        self, port: int, path: str = "/events", headers: dict[str, str] | None = None
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
            "",
            "",
        ]
        self.sock.sendall("\r\n".join(lines).encode())
        self.received = b""

    def read_until(self, marker: bytes, timeout: float = 10, count: int = 1) -> bytes:
        """Read until ``marker`` has been received ``count`` times; return everything
        received so far."""
        deadline = time.monotonic() + timeout
        while self.received.count(marker) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"timed out waiting for {marker!r}; received {self.received[-500:]!r}"
                ) from None
            if not chunk:
                raise AssertionError(
                    f"connection closed before {marker!r}; received {self.received[-500:]!r}"
                )
            self.received += chunk
        return self.received

    def close(self) -> None:
        self.sock.close()


class Process:
    """A server started from a command line, in its own session, on an ephemeral port read
    from its log with ``listening`` (a pattern whose group 1 is the port)."""

    def __init__(
        self, command: list[str], env: dict[str, str], log_path: Path, listening: str
    ) -> None:
        self.log_path = log_path
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base_env, "PYTHONUNBUFFERED": "1", **env},
                cwd=TESTS,
                start_new_session=True,
            )

        def port() -> re.Match[str] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}")
            return re.search(listening, self.log())

        try:
            self.url = f"http://127.0.0.1:{wait_until(port, 30, 'the server to listen').group(1)}"
        except AssertionError as e:
            self.stop()
            pytest.fail(f"the server did not start ({e}); its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@pytest.fixture
def launch(tmp_path: Path) -> t.Iterator[t.Callable[..., Process]]:
    """Start servers from command lines: ``launch([...], env={...}, listening=PATTERN)``;
    stopped at teardown. They run in ``tests/``, so ``apps.<name>`` imports."""
    started: list[Process] = []

    def start(command: list[str], *, env: dict[str, str] | None = None, listening: str) -> Process:
        process = Process(command, env or {}, tmp_path / f"server-{len(started)}.log", listening)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root there is no sandbox; and the machine has no outside network, so nothing that
# would reach for it (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> t.Iterator[t.Any]:
    """Debian's headless Chromium, driven by Playwright; never downloaded."""
    need("chromium", shutil.which("chromium") or Path(CHROMIUM).exists())
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright", False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``tests/node_modules``, installed from ``tests/package-lock.json`` (git-ignored).

    npm answers from its cache when it can, so that a machine that installed once runs
    the tests offline; a failed install with every package already present still counts.
    """
    need("node and npm", shutil.which("node") and shutil.which("npm"))
    folder = TESTS / "node_modules"
    result = subprocess.run(
        ["npm", "install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=TESTS, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    wanted = json.loads((TESTS / "package.json").read_text())["dependencies"]
    present = all((folder / name).is_dir() for name in wanted)
    need(f"the npm packages of tests/package.json ({result.stderr.strip()[-300:]})", present)
    return folder
