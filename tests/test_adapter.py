"""sse_flask.worker's adapter to gunicorn's and gevent's internals: pinned to the versions it
was checked with, and falling back, loudly in the log, when they change.

The changes are made by real gunicorn with sse-flask's settings and worker class, through a
``post_fork`` hook in ``tests/apps/adapter_conf.py`` that alters what the worker sees before
it boots; each stream is then read over HTTP while events are published.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

CONFIG = Path(__file__).resolve().parent / "apps" / "adapter_conf.py"
WORKER = "sse_flask.worker.GeventWorker"
VERSIONS_WARNING = "sse_flask.worker was checked with gunicorn"
FALLBACK_WARNING = "event streams are left to gunicorn's own writes"


def test_installed_versions_are_those_checked() -> None:
    """The installed gunicorn and gevent are those whose internals the adapter was checked
    with: after an upgrade, check what sse_flask.worker uses of them, then update
    ``CHECKED_WITH``."""
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, importlib.metadata as m, sse_flask.worker as w; print(json.dumps("
            "[w.CHECKED_WITH, {n: m.version(n) for n in ('gunicorn', 'gevent')}]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    checked, installed = json.loads(found.stdout)
    assert installed == checked


def delivers(server: Server, stream: t.Callable[..., StreamClient], label: str) -> None:
    """A stream opened on ``server`` receives the events published meanwhile."""
    with stream(server.url) as client:
        wait_until(lambda: server.stats()["consumers"] == 1, 10, "the stream")
        for n in range(3):
            server.say(f"{label} {n}")
        assert [event.data for event in client.take(3)] == [f"{label} {n}" for n in range(3)]
    wait_until(lambda: server.stats()["consumers"] == 0, 10, "the stream to close")


@pytest.mark.parametrize(
    ("change", "warnings"),
    [
        ("", []),
        ("versions", [VERSIONS_WARNING]),
        ("start_response", ["start_response.__self__ (gunicorn's Response) is missing"]),
        ("response", ["gunicorn's Response.bytes_sent is missing"]),
        ("pool", ["gunicorn.workers.ggevent.Pool is not gevent's Pool"]),
    ],
)
def test_changed_internals_are_logged_once_and_streams_still_deliver(
    launch: t.Callable[..., Server],
    stream: t.Callable[..., StreamClient],
    change: str,
    warnings: list[str],
) -> None:
    """Under the versions checked, the worker logs no warning. Under others, it says so once,
    naming both; with an internal the direct writes need missing, it says which, once, and
    leaves streams to gunicorn; without gevent's Pool in gunicorn's worker module, it says so
    and leaves streams their greenlets. Either way, every stream gets its events."""
    server = launch(
        WORKER, "sse_flask.demo:create_app", "-c", str(CONFIG), env={"ADAPTER_CHANGE": change}
    )
    delivers(server, stream, "first")
    delivers(server, stream, "second")
    log = server.log()
    logged = [line for line in log.splitlines() if "[WARNING]" in line]
    assert len(logged) == len(warnings), log
    for line, warning in zip(logged, warnings):
        assert warning in line, log
    if change == "versions":
        assert "gunicorn 99.0.0 and gevent 99.1.0" in logged[0], log
    if change in ("start_response", "response"):
        assert FALLBACK_WARNING in logged[0], log
    if change == "pool":
        assert "idle event streams keep their greenlets" in logged[0], log
