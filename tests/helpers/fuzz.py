"""The machinery of the fuzz modules (tests/test_fuzz_*.py): a real server (gunicorn,
gevent worker, the demo app with a publish token) per module, requests sent byte for byte as
built, and the checks every answer and the server afterwards must pass.

For every answer:

- never a 5xx;
- an error from the app is JSON ``{"error": "<words>"}`` with no traceback in it;
- gunicorn's own refusals of malformed HTTP are accepted: 400, 414 (request line too long), 431
  (headers too large) and 417 (an ``Expect`` it cannot meet). gunicorn writes them itself, before
  the app sees any request, as a small HTML page with ``Connection: close`` and no ``Server``
  header, which is how :attr:`Answer.from_gunicorn` tells them from the app's JSON;
- where the contract fixes the answer, that answer: the status of a publish (200, 400 for a bad
  channel or event type or body, 401 without the token, 413 for data over the limit), and a 200
  stream starting with ``retry:``.

One stream on the ``witness`` channel stays open through the whole module and must receive
exactly the publishes acknowledged on that channel, in order, with their data intact. At the end
(:func:`check_afterwards`), a normal httpx-sse client still opens a stream and receives an
event, the worker counts no more streams than before the fuzz, and the server's log holds no
traceback and no error.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import http.client
import json
import re
import select
import socket
import threading
import time
import typing as t
import urllib.parse
from pathlib import Path

import httpx_sse._decoders as sse_decoders
import pytest
from hypothesis import HealthCheck, settings

from helpers.fuzz_verdicts import HELLO, MAX_DATA, Verdict, query_pairs, valid_channel
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

TOKEN = "fuzz-Tok.3f9a"
AUTH = f"Bearer {TOKEN}"
WITNESS = "witness"
#: What gunicorn itself answers to malformed HTTP, before the app sees a request.
GUNICORN_REFUSALS = {400, 414, 417, 431}
TIMEOUT = 20.0


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# ---------------------------------------------------------------------------------------------
# The wire: requests sent byte for byte as built, answers parsed by http.client
# ---------------------------------------------------------------------------------------------


class Answer(t.NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def from_gunicorn(self) -> bool:
        """gunicorn's own error page (``gunicorn.util.write_error``), not an answer of the app."""
        return (
            self.headers.get("Content-Type") == "text/html"
            and "Server" not in self.headers
            and self.body.startswith(b"<html>")
            and b"<h1><p>" in self.body
        )

    def describe(self) -> str:
        return f"{self.status} {dict(self.headers)} {self.body[:600]!r}"


def build(
    method: str | bytes,
    target: str | bytes,
    headers: t.Sequence[tuple[str | bytes, str | bytes]] = (),
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """One request, exactly as given: no header is checked, encoded or added but ``Host`` and
    ``Content-Length`` (when there is a body and none was given)."""

    def raw(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")

    lines = [raw(method) + b" " + raw(target) + b" " + version, b"Host: 127.0.0.1"]
    lines += [raw(name) + b": " + raw(value) for name, value in headers]
    if body and not any(
        raw(name).lower() in (b"content-length", b"transfer-encoding") for name, _ in headers
    ):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Wire:
    """One keep-alive connection to the server, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exchange(self, request: bytes, method: str = "GET") -> Answer:
        """Send ``request`` and read its whole answer (not for streams)."""
        for attempt in range(2):
            fresh = self.sock is None
            if self.sock is None:
                self.sock = self.connect()
            try:
                self.sock.sendall(request)
                response = http.client.HTTPResponse(self.sock, method=method)
                response.begin()
                answer = Answer(response.status, response.msg, response.read())
            except (ConnectionError, http.client.RemoteDisconnected):
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                self.close()
                if fresh or attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def open_stream(port: int, request: bytes, method: str = "GET") -> tuple[Answer, bytes]:
    """Send ``request`` on a new connection; return the answer's head and, for a 200 stream, the
    first bytes of its body; then close the connection, as a browser that navigates away."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        try:
            if response.status == 200 and response.msg.get("Content-Type", "").startswith(
                "text/event-stream"
            ):
                return Answer(response.status, response.msg, b""), response.read1(65536)
            return Answer(response.status, response.msg, response.read()), b""
        finally:
            response.close()
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# The server, the witness stream, and the bookkeeping
# ---------------------------------------------------------------------------------------------


class Witness(threading.Thread):
    """A stream on the ``witness`` channel, read in a thread over a plain socket (HTTP/1.0, so
    the body is the bare event stream) and parsed with httpx-sse's decoder."""

    def __init__(self, port: int) -> None:
        super().__init__(name="fuzz witness", daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(
            f"GET /events?channel={WITNESS} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        self.events: list[tuple[str, str, str]] = []
        self.failure: str | None = None
        self._stopping = threading.Event()
        self._head: bytes | None = b""
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._lines = sse_decoders.SSELineDecoder()
        self._sse = sse_decoders.SSEDecoder()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select([self.sock], [], [], 0.1)
                if not readable:
                    continue
                chunk = self.sock.recv(1 << 18)
                if not chunk:
                    self.failure = "the witness stream was closed by the server"
                    return
                self._feed(chunk)
        except Exception as e:  # reported by the last test, not lost in a thread
            self.failure = f"the witness failed: {e!r}"

    def _feed(self, chunk: bytes) -> None:
        if self._head is not None:
            self._head += chunk
            if b"\r\n\r\n" not in self._head:
                return
            head, _, chunk = self._head.partition(b"\r\n\r\n")
            if head.split(b" ", 2)[1] != b"200":
                raise AssertionError(f"the witness stream was refused: {head!r}")
            self._head = None
        for line in self._lines.decode(self._text.decode(chunk)):
            event = self._sse.decode(line)
            if event is not None and event.id:
                self.events.append((event.id, event.event, event.data))

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)
        self.sock.close()


class Fuzz:
    """The server every test of a module fuzzes, and what the tests learned from it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wire = Wire(server.port)
        self.cases: collections.Counter[str] = collections.Counter()
        self.refused_by_gunicorn: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.acknowledged: list[str] = []
        #: (id, event type, data) of each publish acknowledged on the witness channel; the data
        #: is ``None`` where the test cannot tell it.
        self.expected_witness: list[tuple[str, str, str | None]] = []
        self.finished: set[str] = set()
        self.started = time.monotonic()
        first = self.say_ok("first")
        self.epoch = first.partition("-")[0]
        self.baseline = server.stats()["consumers"]
        self.witness = Witness(server.port)
        self.witness.start()
        wait_until(
            lambda: server.stats()["consumers"] == self.baseline + 1,
            15,
            "the witness stream to open",
        )

    def say_ok(self, data: str) -> str:
        request = build(
            "POST",
            "/say",
            [("Authorization", AUTH), ("Content-Type", "application/json")],
            json.dumps({"data": data}).encode(),
        )
        answer = self.wire.exchange(request, "POST")
        assert answer.status == 200, answer.describe()
        event_id = str(json.loads(answer.body)["id"])
        self.acknowledged.append(event_id)
        return event_id

    def check(
        self, test: str, answer: Answer, verdict: Verdict, *, body: bytes = b"", head: bool = False
    ) -> None:
        """Check ``answer`` against the rules in the module docstring and ``verdict``.

        A body many times the data limit may be refused with 413 unread, whatever it holds.
        """
        oversized = {413} if len(body) > 8 * MAX_DATA else set()
        self.cases[test] += 1
        self.statuses[answer.status] += 1
        assert answer.status < 500, f"a 5xx: {answer.describe()}"
        if answer.from_gunicorn:
            self.refused_by_gunicorn[test] += 1
            assert answer.status in GUNICORN_REFUSALS, answer.describe()
            return
        assert b"Traceback" not in answer.body, answer.describe()
        if answer.status >= 400 and not (head and not answer.body):
            assert answer.headers.get("Content-Type") == "application/json", answer.describe()
            error = json.loads(answer.body)
            assert (
                isinstance(error, dict) and isinstance(error.get("error"), str) and error["error"]
            ), answer.describe()
        assert answer.status in verdict.statuses | oversized, (
            f"expected {sorted(verdict.statuses)}: {answer.describe()}"
        )
        if answer.status == 200 and verdict.text is not None:
            published = json.loads(answer.body)
            assert isinstance(published["id"], str) and published["id"], answer.describe()
            assert (published["channel"], published["event"]) == (verdict.channel, verdict.event), (
                answer.describe()
            )
        elif (
            answer.status == 200
            and answer.headers.get("Content-Type") == "application/json"
            and b'"id"' in answer.body
        ):
            published = json.loads(answer.body)  # a publish whose fields the test could not tell
        else:
            return
        self.acknowledged.append(published["id"])
        if published["channel"] == WITNESS:
            self.expected_witness.append((published["id"], published["event"], verdict.text))

    def check_stream(
        self, test: str, answer: Answer, first: bytes, verdict: Verdict, *, head: bool = False
    ) -> None:
        """:meth:`check`, and a 200 must be an event stream that starts with ``retry:``."""
        self.check(test, answer, verdict, head=head)
        if answer.status == 200 and not answer.from_gunicorn:
            assert answer.headers.get("Content-Type") == "text/event-stream; charset=utf-8", (
                answer.describe()
            )
            assert first.startswith(b"retry:"), first[:200]

    def fuzzed(self) -> int:
        """Cases of the hypothesis tests (not the raw ones, nor requests made while trickling)."""
        return sum(count for name, count in self.cases.items() if name not in ("raw", "trickle"))

    def report(self) -> str:
        by_test = ", ".join(f"{name} {count}" for name, count in self.cases.items())
        refused = sum(self.refused_by_gunicorn.values())
        statuses = ", ".join(
            f"{status}: {count}" for status, count in sorted(self.statuses.items())
        )
        return (
            f"fuzz: {self.fuzzed()} hypothesis cases, {sum(self.cases.values())} requests in all, in "
            f"{time.monotonic() - self.started:.1f} s ({by_test}); {refused} refused by gunicorn as malformed HTTP; "
            f"statuses {statuses}"
        )


def tell(request: pytest.FixtureRequest, line: str) -> None:
    """Print ``line`` on the terminal, past pytest's capture, even when every test passes."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\n{line}", flush=True)


@contextlib.contextmanager
def fuzzing(
    args: list[str], log: Path, request: pytest.FixtureRequest, label: str = ""
) -> t.Iterator[Fuzz]:
    """A :class:`Fuzz` of a server started with ``args``; on exit the server stops and the
    report is told, headed by ``label``."""
    server = Server.serve(args, {"SSE_PUBLISH_TOKEN": TOKEN, "SSE_HEARTBEAT": "2"}, log, 1)
    try:
        state = Fuzz(server)
        try:
            yield state
        finally:
            state.witness.stop()
            state.wire.close()
            tell(request, label + state.report())
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# The /events case, which the in-process and the Redis fuzz share
# ---------------------------------------------------------------------------------------------

#: Channels that need a subscribe token: the default SSE_PRIVATE_PREFIXES, and jobs'.
PRIVATE_PREFIXES = ("user:", "job:")


def events_case(
    fuzz: Fuzz,
    test: str,
    names: list[str],
    given_id: t.Any,
    where: str,
    with_epoch: bool,
    pick: int,
    accept: str | None,
) -> None:
    """GET /events with ``names`` as channels and ``given_id`` to resume from."""
    if isinstance(given_id, int) or (given_id is not None and with_epoch):
        given_id = f"{fuzz.epoch}-{given_id}"
    elif given_id is None and with_epoch:
        given_id = fuzz.acknowledged[pick % len(fuzz.acknowledged)]
    query = [("channel", name.encode("utf-8", "surrogatepass")) for name in names]
    headers = [("Accept", accept)] if accept is not None else []
    if given_id is not None and where in ("header", "both"):
        headers.append(("Last-Event-ID", given_id.encode("latin-1", "replace")))
    if given_id is not None and where in ("param", "both"):
        query.append(("lastEventId", given_id.encode("utf-8", "surrogatepass")[:1000]))
    target = "/events?" + "&".join(
        f"{name}={urllib.parse.quote_from_bytes(value, safe='')}" for name, value in query
    )
    answer, first = open_stream(fuzz.server.port, build("GET", target, headers))
    decoded = [value for name, value in query_pairs(target.partition("?")[2]) if name == "channel"]
    # Any resume id is answered with a stream: replay after it, or ``event: missed`` first;
    # but a private channel (the demo's ``user:``, or a job's) needs a token this case lacks.
    if not all(valid_channel(name) for name in decoded):
        status = 400
    elif any(name.startswith(PRIVATE_PREFIXES) for name in decoded):
        status = 403
    else:
        status = 200
    verdict = Verdict(frozenset({status}))
    fuzz.check_stream(test, answer, first, verdict)


# ---------------------------------------------------------------------------------------------
# Afterwards
# ---------------------------------------------------------------------------------------------


def check_afterwards(fuzz: Fuzz) -> None:
    """The server still serves a normal client; the witness got exactly what was acknowledged
    on its channel; the worker counts no stream but the witness; the log has no error."""
    server = fuzz.server
    client = StreamClient(server.url, channels=["after-fuzz"])
    try:
        assert client.response.status_code == 200
        request = build(
            "POST",
            "/say",
            [("Authorization", AUTH), ("Content-Type", "application/json")],
            b'{"data": "still here", "channel": "after-fuzz", "event": "end"}',
        )
        answer = fuzz.wire.exchange(request, "POST")
        assert answer.status == 200, answer.describe()
        [event] = client.take(1)
        assert (event.event, event.data, event.id) == (
            "end",
            "still here",
            json.loads(answer.body)["id"],
        )
    finally:
        client.close()

    expected = fuzz.expected_witness
    wait_until(
        lambda: fuzz.witness.failure or len(fuzz.witness.events) >= len(expected),
        30,
        f"{len(expected)} witness events",
    )
    assert fuzz.witness.failure is None, fuzz.witness.failure
    assert len(fuzz.witness.events) == len(expected), (
        "the witness did not get as many events as were acknowledged on its channel"
    )
    for (event_id, event_type, data), (expected_id, expected_type, text) in zip(
        fuzz.witness.events, expected, strict=True
    ):
        assert (event_id, event_type) == (expected_id, expected_type), (
            "the witness got another event than was acknowledged"
        )
        if text == HELLO:
            assert re.fullmatch(r"hello \d+", data), data  # GET /say with no data: "hello N"
        elif text is not None:
            assert data == text, f"event {event_id} arrived with other data than was published"

    wait_until(
        lambda: server.stats()["consumers"] == fuzz.baseline + 1,
        15,
        "no stream but the witness to be open",
    )
    stats = server.stats()
    assert stats["channels"] == {WITNESS: 1}, stats
    assert stats["dropped"] == 0, stats

    log = server.log()
    problems = [
        line
        for line in log.splitlines()
        if re.search(r"Traceback|\[ERROR\]|\[CRITICAL\]|unexpected error", line)
    ]
    assert not problems, "the server logged errors:\n" + log[-20000:]
    assert len(server.worker_pids()) == 1, "the worker was replaced"


def check_counts(fuzz: Fuzz, tests: t.Collection[str], at_least: int) -> None:
    """When every one of ``tests`` (a module's hypothesis tests) ran, at least ``at_least`` cases
    did, and each reached the app often enough."""
    if fuzz.finished >= set(tests):
        assert fuzz.fuzzed() >= at_least, fuzz.report()
        # The fuzz must mostly reach the app, not stop at gunicorn's door; but the header and
        # method/path fuzzes send malformed heads on purpose, and gunicorn refuses about 80%
        # and 60% of their cases: they must reach it in a tenth and a quarter of them.
        for test in tests:
            reached = fuzz.cases[test] - fuzz.refused_by_gunicorn[test]
            floor = {"headers": 0.1, "methods-paths": 0.25}.get(test, 0.5)
            assert reached >= fuzz.cases[test] * floor, (
                f"{test}: {reached} cases reached the app; {fuzz.report()}"
            )
