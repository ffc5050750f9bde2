"""Fixtures for tests against real parts: gunicorn with gevent workers started through
``sse-flask serve`` on an ephemeral port, other servers, a ``redis-server`` on a free port,
and SSE clients we did not write (httpx-sse, sseclient-py) beside raw sockets. What the
tests import is in ``helpers``; this module holds only fixtures and settings.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import typing as t
from pathlib import Path

import hypothesis
import pytest
from helpers.env import IN_CI, REPO, TESTS, need
from helpers.redis import RedisServer
from helpers.servers import Server, command
from helpers.sse import StreamClient

# Locally, property tests explore new inputs on every run; in CI they replay the same ones,
# so that a submission is judged on what it changed, not on the luck of the draw.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    hypothesis.settings.load_profile("ci")


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
        server = Server.serve(
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
def launch(tmp_path: Path) -> t.Iterator[t.Callable[..., Server]]:
    """Start other servers: ``launch(server, app, *options, env={...}, measured=True)`` serves
    ``app`` (``MODULE:FACTORY``) with ``command(server, app, *options)`` (gunicorn with any
    worker class, ``waitress``, ``flask``); stopped at teardown. ``measured=False`` leaves
    the server out of coverage's measurement."""
    launched: list[Server] = []

    def start(
        server: str,
        app: str,
        *options: str,
        env: dict[str, str] | None = None,
        measured: bool = True,
    ) -> Server:
        if server == "waitress":
            need("waitress", importlib.util.find_spec("waitress"))
        log_path = tmp_path / f"{server}-{len(launched)}.log"
        # The apps in tests/apps/ import in every process the server starts.
        env = {"PYTHONPATH": str(TESTS), **(env or {})}
        launched.append(Server(command(server, app, *options), env, log_path, measured=measured))
        return launched[-1]

    yield start
    for server in launched:
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


@pytest.fixture
def redis_server(tmp_path: Path) -> t.Iterator[RedisServer]:
    need("redis-server", shutil.which("redis-server"))
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


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
