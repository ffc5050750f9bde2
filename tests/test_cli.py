"""The ``sse-flask`` command line, run for real in subprocesses: ``python -m sse_flask`` and
the installed ``sse-flask`` console script, against real gunicorn servers.

Three servers, one per class: the demo app; ``apps.cli_custom`` (a factory mounting the
blueprint under ``/sse``) with a publish token; and ``apps.cli_instance`` (a module-level Flask
instance) whose streams the server ends after about a second, for ``listen`` to resume.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import sysconfig
import threading
import time
import typing as t
from pathlib import Path

import pytest
from helpers.env import TESTS, free_port, need
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

import sse_flask

TOKEN = "cli-tok-71c2"
SCRIPT = Path(sysconfig.get_path("scripts")) / "sse-flask"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without any SSE_* of the developer's, plus ``extra``."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
    return {**base, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(extra or {})}


def command(*args: str, script: bool = False) -> list[str]:
    if script:
        need("the sse-flask console script", SCRIPT.exists())
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "sse_flask", *args]


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``sse-flask ARGS`` to completion."""
    return subprocess.run(
        command(*args, script=script),
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=cli_env(env),
        cwd=TESTS,
        timeout=60,
        check=False,
    )


def assert_failed(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The command exited with ``code``, saying ``words`` on stderr, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


class Listener:
    """``sse-flask listen`` in a subprocess, its output lines gathered by threads as they come."""

    def __init__(self, *args: str, script: bool = False) -> None:
        self.process = subprocess.Popen(
            command("listen", *args, script=script),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=cli_env(),
            cwd=TESTS,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(
                target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(self.process.stderr, self.errors.append), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: t.IO[str], sink: t.Callable[[str], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def stderr(self) -> str:
        return "\n".join(self.errors)

    def wait_for_stderr(self, text: str, *, more_than: int, timeout: float = 20) -> None:
        """Wait until ``text`` has appeared on standard error more than ``more_than`` times."""
        wait_until(
            lambda: self.stderr().count(text) > more_than,
            timeout,
            f"{text!r} on the stderr of listen",
        )

    def read(self, count: int, timeout: float = 20) -> list[str]:
        """The next ``count`` lines of standard output; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while len(lines) < count:
            try:
                lines.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"listen printed {lines} of {count} lines in {timeout} s "
                    f"(exit code {self.process.poll()}); its stderr:\n{self.stderr()}"
                ) from None
        return lines

    def pending(self) -> list[str]:
        """Lines printed and not read yet."""
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get_nowait())
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        for thread in self._threads:
            thread.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def listen() -> t.Iterator[t.Callable[..., Listener]]:
    """Start ``sse-flask listen ARGS``; stopped at teardown."""
    started: list[Listener] = []

    def start(*args: str, script: bool = False) -> Listener:
        listener = Listener(*args, script=script)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def wait_subscribed(server: Server, *channels: str) -> None:
    """Wait until one stream listens to each of ``channels`` (so that nothing published next
    is missed by a client that started without an id)."""
    wait_until(
        lambda: all(server.stats()["channels"].get(c) == 1 for c in channels),
        20,
        f"a stream on {channels}",
    )


# ---------------------------------------------------------------------------------------------
# No server needed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
def test_version(script: bool) -> None:
    result = cli("--version", script=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sse-flask, version {sse_flask.__version__}\n"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["serve", "say", "listen"]),
        (
            ["serve"],
            ["--bind", "--workers", "--broker", "--app", "127.0.0.1:8080", "MODULE:FACTORY"],
        ),
        (["say"], ["MESSAGE", "--url", "--channel", "--event", "--stdin", "--token"]),
        (["listen"], ["URL", "--channel"]),
    ],
    ids=["main", "serve", "say", "listen"],
)
def test_help(args: list[str], words: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: sse-flask {' '.join(args)}".rstrip() + " [OPTIONS]")
    for word in words:
        assert word in result.stdout


def test_console_script_help() -> None:
    result = cli("say", "--help", script=True)
    assert result.returncode == 0 and "Usage: sse-flask say [OPTIONS] [MESSAGE]" in result.stdout, (
        result.stdout
    )


@pytest.mark.parametrize(
    ("args", "stdin"), [([], None), (["hi", "--stdin"], "x\n")], ids=["neither", "both"]
)
def test_say_needs_a_message_or_stdin(args: list[str], stdin: str | None) -> None:
    result = cli("say", *args, "--url", f"http://127.0.0.1:{free_port()}", stdin=stdin)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert (
        "Usage: sse-flask say" in result.stderr
        and "give either MESSAGE or --stdin" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_say_to_an_unreachable_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_failed(cli("say", "hi", "--url", url), 1, f"cannot reach {url}")


# ---------------------------------------------------------------------------------------------
# The demo app
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def demo(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    server = Server.serve([], {}, tmp_path_factory.mktemp("cli-demo") / "gunicorn.log", 1)
    yield server
    server.stop()


class TestDemo:
    def test_say_publishes_and_prints_the_id(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url)
        result = cli("say", "héllo wörld 😀", "--url", demo.url, script=True)
        assert result.returncode == 0, result.stderr
        (event,) = listener.take(1)
        assert result.stdout == f"{event.id}\n"
        assert (event.event, event.data) == ("message", "héllo wörld 😀")

    def test_serve_has_the_largest_accept_queue_the_kernel_allows(self, demo: Server) -> None:
        """A reconnect storm must not overflow the listen backlog (gunicorn's 2048): serve asks
        for 65535, which the kernel caps at net.core.somaxconn."""
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{demo.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listening[2]) == min(somaxconn, 65535)

    def test_say_with_channel_and_event(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url, channels=["cli-news"])
        result = cli(
            "say", "extra!", "--url", demo.url + "/", "--channel", "cli-news", "--event", "headline"
        )
        assert result.returncode == 0, result.stderr
        (event,) = listener.take(1)
        assert (result.stdout, event.event, event.data) == (f"{event.id}\n", "headline", "extra!")

    def test_say_stdin_publishes_each_line_in_order(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url, channels=["cli-logs"])
        result = cli(
            "say",
            "--stdin",
            "--url",
            demo.url,
            "--channel",
            "cli-logs",
            stdin="first line\nsecond: 2\r\nthird, no newline",
        )
        assert result.returncode == 0, result.stderr
        events = listener.take(3)
        assert [e.data for e in events] == ["first line", "second: 2", "third, no newline"]
        assert result.stdout.splitlines() == [e.id for e in events]

    def test_say_with_a_bad_channel_prints_the_servers_error(self, demo: Server) -> None:
        result = cli("say", "hi", "--url", demo.url, "--channel", "no spaces")
        assert_failed(
            result,
            1,
            f"{demo.url} answered 400",
            "channel must be 1 to 128 characters",
            "'no spaces'",
        )

    def test_say_bad_event_type_and_data_too_large(self, demo: Server) -> None:
        assert_failed(
            cli("say", "hi", "--url", demo.url, "--event", "a\nb"),
            1,
            "answered 400",
            "event type must not contain CR, LF or NUL",
        )
        assert_failed(
            cli("say", "é" * 40_000, "--url", demo.url), 1, "answered 413", "SSE_MAX_DATA_BYTES"
        )

    def test_listen_prints_events_as_they_arrive(
        self, demo: Server, listen: t.Callable[..., Listener]
    ) -> None:
        listener = listen(demo.url, "--channel", "cli-a", "--channel", "cli-b")
        wait_subscribed(demo, "cli-a", "cli-b")
        demo.say("plain", channel="cli-a")
        assert listener.read(1) == ["plain"]
        demo.say("noted", channel="cli-b", event="note")
        assert listener.read(1) == ["[note] noted"]
        demo.say({"k": [1, 2]}, channel="cli-a")
        demo.say("typed message", channel="cli-a", event="message")
        demo.say("line 1\nline 2", channel="cli-b")
        demo.say("not for us", channel="cli-c")
        demo.say("ünïcode 😀", channel="cli-a", event="greeting")
        assert listener.read(5) == [
            '{"k":[1,2]}',
            "typed message",
            "line 1",
            "line 2",
            "[greeting] ünïcode 😀",
        ]
        assert listener.pending() == []
        assert listener.process.poll() is None

    def test_listen_defaults_to_the_default_channel(
        self, demo: Server, listen: t.Callable[..., Listener]
    ) -> None:
        listener = listen(demo.url, script=True)
        wait_subscribed(demo, "default")
        demo.say("to default")
        assert listener.read(1) == ["to default"]

    def test_listen_to_a_bad_channel_prints_the_servers_error(self, demo: Server) -> None:
        result = cli("listen", demo.url, "--channel", "a/b")
        assert_failed(result, 1, "answered 400", "channel must be 1 to 128 characters", "'a/b'")


# ---------------------------------------------------------------------------------------------
# A custom app, mounted under /sse, with a publish token
# ---------------------------------------------------------------------------------------------


class PrefixedServer(Server):
    """A server whose blueprint is under ``/sse`` while its own views are at the root:
    ``stats`` reads ``/sse/stats`` (and it is started with ``healthz="/sse/healthz"``)."""

    def stats(self) -> dict[str, t.Any]:
        return dict(self.get("/sse/stats").json())


@pytest.fixture(scope="class")
def custom(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    log = tmp_path_factory.mktemp("cli-custom") / "gunicorn.log"
    server = PrefixedServer.serve(
        ["--app", "apps.cli_custom:create_app"],
        {"SSE_PUBLISH_TOKEN": TOKEN},
        log,
        1,
        healthz="/sse/healthz",
    )
    yield server
    server.stop()


class TestCustomApp:
    def test_serve_a_custom_app_factory(
        self, custom: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        assert custom.get("/").text == "custom app"
        assert custom.get("/sse/healthz").json() == {"status": "ok"}
        assert custom.get("/healthz").status_code == 404, "the blueprint is mounted under /sse only"
        listener = stream(custom.url + "/sse", channels=["custom"])
        response = custom.post(
            "/sse/say",
            json={"data": "hi", "channel": "custom"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200, response.text
        (event,) = listener.take(1)
        assert (event.id, event.data) == (response.json()["id"], "hi")

    def test_say_needs_the_token(self, custom: Server, listen: t.Callable[..., Listener]) -> None:
        url = custom.url + "/sse"
        listener = listen(url, "--channel", "tok")
        wait_subscribed(custom, "tok")
        published = custom.stats()["published"]
        needs = "publishing needs the header 'Authorization: Bearer <SSE_PUBLISH_TOKEN>'"
        assert_failed(
            cli("say", "no token", "--url", url, "--channel", "tok"),
            1,
            f"{url} answered 401",
            needs,
        )
        assert_failed(
            cli("say", "wrong", "--url", url, "--channel", "tok", "--token", "nope"),
            1,
            "answered 401",
            needs,
        )
        assert_failed(
            cli(
                "say",
                "wrong env",
                "--url",
                url,
                "--channel",
                "tok",
                env={"SSE_PUBLISH_TOKEN": "nope"},
            ),
            1,
            "answered 401",
        )

        with_option = cli("say", "with --token", "--url", url, "--channel", "tok", "--token", TOKEN)
        assert with_option.returncode == 0, with_option.stderr
        with_env = cli(
            "say",
            "--stdin",
            "--url",
            url,
            "--channel",
            "tok",
            stdin="from env 1\nfrom env 2\n",
            env={"SSE_PUBLISH_TOKEN": TOKEN},
        )
        assert with_env.returncode == 0, with_env.stderr
        assert len((with_option.stdout + with_env.stdout).splitlines()) == 3
        # Only what was allowed reached the stream, in order.
        assert listener.read(3) == ["with --token", "from env 1", "from env 2"]
        assert custom.stats()["published"] == published + 3


# ---------------------------------------------------------------------------------------------
# A Flask instance (not a factory), whose streams end after about a second
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def instance(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    # listen waits SSE_RETRY_MS before reconnecting: a second in which to publish.
    env = {"SSE_MAX_STREAM_SECONDS": "1", "SSE_RETRY_MS": "1000", "SSE_OPEN_PUBLISH": "true"}
    server = Server.serve(
        ["--app", "apps.cli_instance:app"],
        env,
        tmp_path_factory.mktemp("cli-instance") / "gunicorn.log",
        1,
    )
    yield server
    server.stop()


class TestInstanceApp:
    def test_serve_a_flask_instance(self, instance: Server) -> None:
        assert instance.get("/").text == "instance app"
        assert instance.get("/healthz").json() == {"status": "ok"}
        assert instance.stats()["backend"] == "memory"
        instance.say("published")

    def test_listen_resumes_after_the_server_ends_the_stream(
        self, instance: Server, listen: t.Callable[..., Listener]
    ) -> None:
        listener = listen(instance.url, "--channel", "life")
        wait_subscribed(instance, "life")
        expected: list[str] = []

        def publish(text: str) -> None:
            instance.say(text, channel="life")
            expected.append(text)

        for cycle in range(2):
            publish(f"live {cycle}")
            listener.wait_for_stderr(
                "stream ended", more_than=listener.stderr().count("stream ended")
            )
            # listen now waits a second before it reconnects with Last-Event-ID.
            for i in range(3):
                publish(f"while away {cycle}.{i}")
        publish("the end")
        assert listener.read(len(expected)) == expected
        assert "stream ended; reconnecting in 1 s" in listener.stderr()
        # No duplicate comes later: the next line is the next event.
        publish("one more")
        assert listener.read(1) == ["one more"]
        assert listener.pending() == []

    def test_listen_resumes_after_a_reload(
        self, instance: Server, listen: t.Callable[..., Listener]
    ) -> None:
        # Must run last in this class: the reload empties the in-process history.
        listener = listen(instance.url, "--channel", "reload")
        wait_subscribed(instance, "reload")
        before = [instance.say(f"before {i}", channel="reload") for i in range(2)]
        assert listener.read(2) == ["before 0", "before 1"]
        instance.reload()
        for i in range(2):
            instance.say(f"after {i}", channel="reload")
        missed, *after = listener.read(3)
        # The new worker does not know the old id: it says so instead of losing events silently.
        assert missed.startswith("[missed] "), missed
        assert json.loads(missed.removeprefix("[missed] "))["last_event_id"] == before[-1]
        assert after == ["after 0", "after 1"]
        instance.say("one more", channel="reload")
        assert listener.read(1) == ["one more"]
        assert listener.pending() == []
