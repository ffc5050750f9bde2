"""The first hour, as a newcomer has it: sse-flask installed from its wheel (not editable)
into a virtualenv of its own, and a directory outside the repository that holds only
``yourapp.py`` (``tests/apps/yourapp.py``, copied there), where the commands run.

Pinned: ``sse-flask serve --app`` imports from the working directory; a bad setting, a
missing module, a bad ``--bind`` or a port in use stop ``serve`` at once, in one line, with
the port never taken; ``listen`` and ``say`` take ``HOST:PORT`` and stop at once on what
waiting will not mend; Ctrl-C (SIGINT) closes streams as SIGTERM does; and plain gunicorn
runs with ``-c python:sse_flask.gunicorn_conf`` from the installed package.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import typing as t
from pathlib import Path

import pytest
from helpers.env import TESTS, free_port
from helpers.servers import Server
from helpers.sse import RawStream
from helpers.wait import wait_until

#: How long a start-up failure may take, and how much it may say (issue 17's "done when").
FAIL_WITHIN = 3.0
FAIL_LINES = 3


def newcomer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the developer's SSE_* settings, nor a PYTHONPATH that could
    reach the checkout."""
    base = {
        key: value for key, value in os.environ.items() if not key.startswith(("SSE_", "PYTHON"))
    }
    return {**base, "PYTHONUNBUFFERED": "1", **(extra or {})}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh directory holding only ``yourapp.py``."""
    directory = tmp_path_factory.mktemp("home")
    shutil.copy(TESTS / "apps" / "yourapp.py", directory)
    return directory


@pytest.fixture(scope="module")
def yourapp(
    installed: Path, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[Server]:
    """``sse-flask serve --app yourapp:create_app --bind 127.0.0.1:PORT`` from ``home``."""
    port = free_port()
    server = Server.serve(
        ["--app", "yourapp:create_app", "--bind", f"127.0.0.1:{port}"],
        newcomer_env(),
        tmp_path_factory.mktemp("yourapp") / "serve.log",
        1,
        command=[str(installed / "sse-flask"), "serve"],
        cwd=home,
    )
    yield server
    server.stop()


def run(
    installed: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``sse-flask ARGS`` in ``cwd`` to completion; return it and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [str(installed / "sse-flask"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=newcomer_env(env),
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - started


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------------------------


def test_serve_imports_the_app_from_the_working_directory(
    yourapp: Server, installed: Path, home: Path
) -> None:
    """The installed console script serves ``yourapp`` from the directory it runs in, and
    ``listen`` and ``say`` reach it as ``HOST:PORT``."""
    assert sorted(path.name for path in home.iterdir() if path.name != "__pycache__") == [
        "yourapp.py"
    ]
    assert yourapp.get("/healthz").json() == {"status": "ok"}
    listener = subprocess.Popen(
        [str(installed / "sse-flask"), "listen", f"127.0.0.1:{yourapp.port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=newcomer_env(),
        cwd=home,
    )
    try:
        wait_until(
            lambda: yourapp.stats()["channels"].get("default") == 1, 20, "listen to subscribe"
        )
        said, _ = run(
            installed, home, "say", "hello newcomer", "--url", f"127.0.0.1:{yourapp.port}"
        )
        assert said.returncode == 0, said.stderr
        assert listener.stdout is not None
        assert listener.stdout.readline() == "hello newcomer\n"
    finally:
        listener.terminate()
        _, errors = listener.communicate(timeout=10)
    assert "Traceback" not in errors, errors


def test_serve_a_module_level_app_from_the_working_directory(
    installed: Path, tmp_path: Path
) -> None:
    """``--app MODULE:APP`` (a Flask instance, not a factory) is imported from the working
    directory too."""
    shutil.copy(TESTS / "apps" / "cli_instance.py", tmp_path)
    server = Server.serve(
        ["--app", "cli_instance:app"],
        newcomer_env(),
        tmp_path / "serve.log",
        1,
        command=[str(installed / "sse-flask"), "serve", "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
    )
    try:
        assert server.get("/").text == "instance app"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (
            [],
            {"SSE_HEARTBEAT": "soon"},
            ["SSE_HEARTBEAT (from the environment)", "greater than 0", "'soon'"],
        ),
        (["--broker", "bogus"], {}, ["SSE_BROKER_URL (from --broker)", "redis://", "'bogus'"]),
        ([], {"SSE_BROKER_URL": "bogus"}, ["SSE_BROKER_URL (from the environment)", "'bogus'"]),
        (["--app", "misconfigured:create_app"], {}, ["SSE_RETRY_MS (from app.config)", "'soon'"]),
        (
            ["--app", "yourap:create_app"],
            {},
            ["no module named 'yourap' in {cwd} (the working directory)"],
        ),
        (["--app", "yourapp:create_ap"], {}, ["'create_ap'", "yourapp.py"]),
    ],
    ids=[
        "environment",
        "broker-flag",
        "broker-environment",
        "app-config",
        "no-module",
        "no-attribute",
    ],
)
def test_a_bad_setting_or_app_stops_serve_before_it_binds(
    installed: Path,
    home: Path,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    words: list[str],
) -> None:
    """Before the port is bound: one line naming the key and where its value came from (or
    the module or attribute looked for, and where), exit status 2, and the port free."""
    shutil.copy(home / "yourapp.py", tmp_path)
    shutil.copy(TESTS / "apps" / "misconfigured.py", tmp_path)
    port = free_port()
    result, took = run(
        installed,
        tmp_path,
        "serve",
        "--app",
        "yourapp:create_app",
        "--bind",
        f"127.0.0.1:{port}",
        *args,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert took < FAIL_WITHIN, f"took {took:.1f} s:\n{output}"
    assert len(output.splitlines()) <= FAIL_LINES, output
    assert "Traceback" not in output and "Listening at" not in output, output
    for word in words:
        assert word.format(cwd=tmp_path) in output
    assert port_is_free(port)


@pytest.mark.parametrize("bind", ["nonsense", "127.0.0.1:port", "127.0.0.1:70000", "in-use"])
def test_a_bad_bind_stops_serve_at_once(installed: Path, home: Path, bind: str) -> None:
    """An address that does not resolve or parse, or a port in use: one line naming it, no
    retries, exit status 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if bind == "in-use":
            bind = f"127.0.0.1:{taken.getsockname()[1]}"
        result, took = run(installed, home, "serve", "--app", "yourapp:create_app", "--bind", bind)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert took < FAIL_WITHIN, f"took {took:.1f} s:\n{output}"
    assert len(output.splitlines()) <= FAIL_LINES, output
    assert f"--bind {bind!r}" in output
    assert "Traceback" not in output and "Listening at" not in output, output


@pytest.mark.parametrize("to", ["process-group", "master", "worker"])
def test_sigint_closes_streams_as_sigterm_does(
    installed: Path, home: Path, tmp_path: Path, to: str
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it; or to the master
    alone, which stops; or to a worker alone, which the master replaces): each open stream
    ends with the chunked terminator and logs ``stream closed``, instead of being cut off."""
    server = Server.serve(
        ["--app", "yourapp:create_app"],
        newcomer_env(),
        tmp_path / "serve.log",
        1,
        command=[str(installed / "sse-flask"), "serve", "--bind", "127.0.0.1:0"],
        cwd=home,
    )
    stream = RawStream(server.port)
    try:
        stream.read_until(b"retry:")
        wait_until(lambda: server.stats()["consumers"] == 1, 10, "the stream")
        if to == "process-group":
            os.killpg(server.process.pid, signal.SIGINT)
        else:
            (worker,) = server.worker_pids()
            os.kill(server.process.pid if to == "master" else worker, signal.SIGINT)
        stream.read_until(b"\r\n0\r\n\r\n", timeout=10)
        stream.close()
        if to != "worker":
            assert server.process.wait(15) == 0
    finally:
        stream.close()
        server.stop()
    log = server.log()
    assert "stream closed (server shutting down)" in log, log
    assert "Traceback" not in log, log


# ---------------------------------------------------------------------------------------------
# gunicorn with the installed config module
# ---------------------------------------------------------------------------------------------


def test_plain_gunicorn_with_the_packaged_config(
    installed: Path, home: Path, tmp_path: Path
) -> None:
    """``gunicorn -c python:sse_flask.gunicorn_conf 'yourapp:create_app()' -b 127.0.0.1:PORT``
    from the newcomer's directory serves streams on sse-flask's worker class."""
    port = free_port()
    server = Server.serve(
        ["yourapp:create_app()", "-b", f"127.0.0.1:{port}"],
        newcomer_env(),
        tmp_path / "gunicorn.log",
        1,
        command=[
            str(installed / "python"),
            "-m",
            "gunicorn",
            "-c",
            "python:sse_flask.gunicorn_conf",
        ],
        cwd=home,
    )
    stream = RawStream(server.port)
    try:
        assert server.port == port
        assert "Using worker: sse_flask.worker.GeventWorker" in server.log()
        stream.read_until(b"retry:")
        wait_until(lambda: server.stats()["consumers"] == 1, 10, "the stream")
        server.say("via gunicorn")
        stream.read_until(b"data: via gunicorn\n\n")
    finally:
        stream.close()
        server.stop()


# ---------------------------------------------------------------------------------------------
# listen and say: HOST:PORT, and what waiting will not mend
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["listen", "say"])
@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "127.0.0.1:port", "http://"])
def test_a_bad_url_stops_at_once(installed: Path, home: Path, command: str, url: str) -> None:
    args = ["listen", url] if command == "listen" else ["say", "hi", "--url", url]
    result, took = run(installed, home, *args)
    assert result.returncode == 2, result.stderr
    assert took < FAIL_WITHIN
    assert repr(url) in result.stderr and "Traceback" not in result.stderr


def test_listen_stops_at_once_on_a_4xx(yourapp: Server, installed: Path, home: Path) -> None:
    result, took = run(installed, home, "listen", f"127.0.0.1:{yourapp.port}/nowhere")
    assert result.returncode == 1, result.stderr
    assert took < FAIL_WITHIN
    assert "answered 404" in result.stderr and "reconnecting" not in result.stderr


class _Page(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a 200 HTML page: a URL that is not an event stream."""

    def do_GET(self) -> None:
        body = b"<!doctype html><p>not a stream</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: t.Any) -> None:
        pass


def test_listen_stops_at_once_on_an_answer_that_is_not_a_stream(
    installed: Path, home: Path
) -> None:
    page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        result, took = run(installed, home, "listen", f"127.0.0.1:{page.server_port}")
    finally:
        page.shutdown()
        page.server_close()
    assert result.returncode == 1, result.stderr
    assert took < FAIL_WITHIN
    assert "answered 200 with text/html, not an event stream" in result.stderr


def test_listen_waits_for_a_server_that_is_not_up(installed: Path, home: Path) -> None:
    """Nothing listening yet may mend: listen says so and keeps trying."""
    listener = subprocess.Popen(
        [str(installed / "sse-flask"), "listen", f"127.0.0.1:{free_port()}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=newcomer_env(),
        cwd=home,
    )
    try:
        assert listener.stderr is not None
        line = listener.stderr.readline()
        assert "cannot reach" in line and "reconnecting in 3 s" in line, line
        assert listener.poll() is None
    finally:
        listener.terminate()
        listener.communicate(timeout=10)


def test_say_tries_again_only_while_it_may_mend(installed: Path, home: Path) -> None:
    """No server: three tries a second apart, then the error; a 4xx (below) is not retried."""
    url = f"127.0.0.1:{free_port()}"
    result, _ = run(installed, home, "say", "hi", "--url", url)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("trying again in 1 s") == 2, result.stderr
    assert f"cannot reach http://{url}" in result.stderr.splitlines()[-1]


def test_say_stops_at_once_on_a_4xx(yourapp: Server, installed: Path, home: Path) -> None:
    result, took = run(
        installed, home, "say", "hi", "--channel", "no spaces", "--url", f"127.0.0.1:{yourapp.port}"
    )
    assert result.returncode == 1, result.stderr
    assert "answered 400" in result.stderr and "trying again" not in result.stderr
    assert took < FAIL_WITHIN
