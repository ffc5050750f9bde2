"""SSE clients we did not write, against ``sse-flask serve``: Node's ``eventsource``, undici's
``EventSource``, httpx-sse, sseclient-py and Chromium's ``EventSource``.

Each is held to the WHATWG rules that web-platform-tests' ``eventsource/`` checks, as they
apply to what sse-flask sends: CR-only, CRLF and LF line ends in published data arrive as
LF; U+2028 (and U+2029, U+0085) are not line breaks; NUL and a leading space in data
survive; every event's ``lastEventId`` is its id, kept across reconnections; the opening
``retry:`` sets the reconnection delay; no client sees an event that nobody published; and
after the server closes the stream the client resumes with ``Last-Event-ID`` and gets what
was published meanwhile, exactly once.

The npm packages come from ``tests/package.json`` (the ``node_modules`` fixture). Python
clients do not reconnect by themselves; their test reconnects them with the id the client
reports, as a reconnecting client would.

Not checked, because sse-flask never sends it: a ``204`` that ends the client.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import typing as t
from pathlib import Path

import httpx
import httpx_sse
import pytest
import requests
import sseclient
from helpers.servers import Server
from helpers.wait import wait_until

#: What is published, and what a conformant client reports for it: (type, sent, received).
PAYLOADS: list[tuple[str, t.Any, str]] = [
    ("message", "plain", "plain"),
    ("message", "cr\ronly", "cr\nonly"),
    ("message", "crlf\r\nline", "crlf\nline"),
    ("message", "lf\nline", "lf\nline"),
    ("message", "mixed\r\n\r\rend\n", "mixed\n\n\nend\n"),
    ("message", "not\u2028a\u2029line\u0085break", "not\u2028a\u2029line\u0085break"),
    ("message", "nul\x00inside", "nul\x00inside"),
    ("message", " leading space", " leading space"),
    ("message", "", ""),
    (
        "message",
        "data: forged\n\nid: 9\nevent: evil\nretry: 1",
        "data: forged\n\nid: 9\nevent: evil\nretry: 1",
    ),
    ("message", {"json": [1, "two"]}, '{"json":[1,"two"]}'),
    ("row", "<tr>\n  <td>é ✓ 😀</td>\n</tr>", "<tr>\n  <td>é ✓ 😀</td>\n</tr>"),
]
TYPES = sorted({kind for kind, _, _ in PAYLOADS})
RETRY_MS = 1200
#: Each stream ends after about this long, so that every client has to resume.
LIFETIME = 2.5
CLIENTS = Path(__file__).resolve().parent / "clients"


class Listener:
    """What one client reports: dicts of kind ``open``, ``error`` or ``event`` (with type,
    data and lastEventId), and ``t``, when."""

    reports: list[dict[str, t.Any]]

    def events(self) -> list[tuple[str, str, str]]:
        return [
            (r["type"], r["data"], r["lastEventId"]) for r in self.current() if r["kind"] == "event"
        ]

    def current(self) -> list[dict[str, t.Any]]:
        return list(self.reports)

    def close(self) -> None:
        raise NotImplementedError


class NodeListener(Listener):
    """An npm package's EventSource, run by ``tests/clients/node_listen.mjs``."""

    def __init__(self, implementation: str, url: str) -> None:
        self.reports = []
        self.process = subprocess.Popen(
            ["node", "--disable-warning=UNDICI-ES", str(CLIENTS / "node_listen.mjs"),
             implementation, url, ",".join(TYPES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.reports.append(json.loads(line))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        with self.process.stderr:
            errors = self.process.stderr.read()
        assert not errors.strip(), errors


class BrowserListener(Listener):
    """Chromium's EventSource, in a page of the server's own origin."""

    def __init__(self, browser: t.Any, url: str, origin: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.goto(origin + "/healthz")
        self.page.add_script_tag(path=str(CLIENTS / "listen.js"))
        self.page.evaluate(
            """([url, types]) => {
                window.reports = [];
                listenSSE(EventSource, url, types, r => reports.push(r));
            }""",
            [url, TYPES],
        )

    def current(self) -> list[dict[str, t.Any]]:
        return list(self.page.evaluate("window.reports"))

    def close(self) -> None:
        self.context.close()


class PythonListener(Listener):
    """httpx-sse or sseclient-py in a thread; reconnected with the id it reports, once the
    server has closed the stream and ``RETRY_MS`` (from the client's ``retry``) has passed."""

    def __init__(self, library: str, url: str) -> None:
        self.reports = []
        self.library = library
        self.url = url
        self.retries: list[int] = []
        self._closed = False
        self._close_current: t.Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_id = ""
        while not self._closed:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                for kind, data, event_id, retry in self._read(headers):
                    if retry is not None:
                        self.retries.append(retry)
                    last_id = event_id or last_id
                    self.reports.append(
                        {
                            "kind": "event",
                            "t": time.time(),
                            "type": kind,
                            "data": data,
                            "lastEventId": last_id,
                        }
                    )
            except (httpx.HTTPError, requests.RequestException, OSError, ValueError):
                pass  # the connection failed, as a server that goes away makes it
            except Exception:
                if self._closed:
                    return  # closed under the reading library, which may fail in any way
                raise
            self.reports.append({"kind": "error", "t": time.time()})
            if self.retries:
                time.sleep(self.retries[-1] / 1000)

    def _read(self, headers: dict[str, str]) -> t.Iterator[tuple[str, str, str | None, int | None]]:
        if self.library == "httpx-sse":
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
                httpx_sse.connect_sse(client, "GET", self.url, headers=headers) as source,
            ):
                self._close_current = source.response.close
                self.reports.append({"kind": "open", "t": time.time()})
                for sse in source.iter_sse():
                    yield sse.event, sse.data, sse.id, sse.retry
        else:
            with requests.get(
                self.url, headers=headers, stream=True, timeout=(10, None)
            ) as response:
                self._close_current = response.close
                self.reports.append({"kind": "open", "t": time.time()})
                for event in sseclient.SSEClient(response.iter_content(None)).events():
                    # sseclient-py keeps retry as the text it read.
                    yield (
                        event.event,
                        event.data,
                        event.id,
                        None if event.retry is None else int(event.retry),
                    )

    def close(self) -> None:
        self._closed = True
        self._close_current()
        self._thread.join(10)


@pytest.fixture(params=["eventsource", "undici", "httpx-sse", "sseclient-py", "chromium"])
def listen(request: pytest.FixtureRequest) -> t.Iterator[t.Callable[[Server], Listener]]:
    """Start the client named by the parameter on a server's default channel."""
    opened: list[Listener] = []

    def start(server: Server) -> Listener:
        url = server.url + "/events"
        listener: Listener
        if request.param in ("eventsource", "undici"):
            request.getfixturevalue("node_modules")
            listener = NodeListener(request.param, url)
        elif request.param == "chromium":
            listener = BrowserListener(request.getfixturevalue("browser"), url, server.url)
        else:
            listener = PythonListener(request.param, url)
        opened.append(listener)
        return listener

    yield start
    for listener in opened:
        listener.close()


def test_client_gets_exactly_what_was_published_and_resumes(
    serve: t.Callable[..., Server], listen: t.Callable[[Server], Listener]
) -> None:
    server = serve(
        env={
            "SSE_HEARTBEAT": "0.5",
            "SSE_RETRY_MS": str(RETRY_MS),
            "SSE_MAX_STREAM_SECONDS": str(LIFETIME),
        }
    )
    listener = listen(server)
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "the client to connect")
    wait_until(
        lambda: any(r["kind"] == "open" for r in listener.current()),
        10,
        "the client to report open",
    )
    expected = []
    for kind, sent, received in PAYLOADS:
        expected.append((kind, received, server.say(sent, event=kind)))
    wait_until(lambda: len(listener.events()) >= len(expected), 10, "the published events")

    # The server ends the stream at its lifetime; what is published before the client is
    # back must come with the resumed stream.
    wait_until(lambda: server.stats()["consumers"] == 0, 10, "the server to close the stream")
    for n in range(3):
        expected.append(("message", f"while away {n}", server.say(f"while away {n}")))
    wait_until(
        lambda: len(listener.events()) >= len(expected),
        10 + RETRY_MS / 1000,
        "the events published while away",
    )
    expected.append(("message", "last", server.say("last")))
    wait_until(lambda: len(listener.events()) >= len(expected), 10, "the last event")

    assert listener.events() == expected, "each event exactly once, as published, and no other"
    reports = listener.current()
    closed = next(r["t"] for r in reports if r["kind"] == "error")
    reopened = next(r["t"] for r in reports if r["kind"] == "open" and r["t"] > closed)
    # Every client's default delay is about 3 s; the server's retry: says 1.2 s.
    assert RETRY_MS / 1000 * 0.9 <= reopened - closed < 2.7, (
        f"reconnected after {reopened - closed:.2f} s"
    )
    if isinstance(listener, PythonListener):
        assert listener.retries[0] == RETRY_MS
