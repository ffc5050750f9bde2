"""The event stream, live: real gunicorn with gevent workers, read with httpx-sse (a parser
we did not write) and over plain sockets for exact bytes and for clients that misbehave.

Each test names the lines of CONTRACT.md ("The stream", and the HTTP table) that it pins.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
from helpers.servers import Server
from helpers.sse import RawStream, StreamClient
from helpers.wait import wait_until

Serve = t.Callable[..., Server]
Stream = t.Callable[..., StreamClient]


# --- reading the wire -------------------------------------------------------------------


OpenWire = t.Callable[..., RawStream]


@pytest.fixture
def raw() -> t.Iterator[OpenWire]:
    """Open raw streams: ``raw(server, path="/events", headers=None, ready=True)``; closed at
    teardown. With ``ready``, return once the ``retry:`` has arrived, when the subscription
    exists."""
    opened: list[RawStream] = []

    def open_wire(
        server: Server,
        path: str = "/events",
        headers: dict[str, str] | None = None,
        *,
        ready: bool = True,
    ) -> RawStream:
        stream = RawStream(server.port, path, headers)
        opened.append(stream)
        if ready:
            stream.wait_for(
                lambda w: w.body.startswith(b"retry:") and b"\n" in w.body, 10, "retry:"
            )
        return stream

    yield open_wire
    for stream in opened:
        stream.close()


def pump_all(
    wires: t.Sequence[RawStream], done: t.Callable[[RawStream], bool], timeout: float
) -> None:
    """Read every wire, in one thread, until ``done`` holds for each or ``timeout`` passes."""
    pending = [wire for wire in wires if not done(wire)]
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for wire in pending:
            selector.register(wire.sock, selectors.EVENT_READ, wire)
        while pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"{len(pending)} of {len(wires)} streams still waiting; one has {pending[0].body[-300:]!r}"
            )
            for key, _ in selector.select(min(remaining, 0.5)):
                wire = key.data
                if not wire.pump(0.01) and wire.eof:
                    raise AssertionError(f"a stream closed early: {wire.body[-300:]!r}")
                if done(wire):
                    selector.unregister(wire.sock)
                    pending.remove(wire)


def id_key(event_id: str) -> list[t.Any]:
    """Ids are opaque; within one broker they increase with their numbers compared as numbers
    (``e-9`` < ``e-10``), which is the order this key gives."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", event_id)]


def assert_increasing(ids: t.Sequence[str]) -> None:
    assert all(ids), f"an event without an id: {ids}"
    keys = [id_key(event_id) for event_id in ids]
    assert all(a < b for a, b in itertools.pairwise(keys)), f"ids do not strictly increase: {ids}"


class Background:
    """Run ``function`` in a daemon thread; :meth:`join` re-raises what it raised there."""

    def __init__(self, function: t.Callable[[], None]) -> None:
        self._failure: list[BaseException] = []

        def run() -> None:
            try:
                function()
            except BaseException as e:
                self._failure.append(e)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Whether ``function`` finished within ``timeout`` seconds; raise what it raised."""
        self._thread.join(timeout)
        if self._failure:
            raise self._failure[0]
        return not self._thread.is_alive()


def take(client: StreamClient, count: int, timeout: float = 20) -> list[t.Any]:
    """``client.take(count)``, failing after ``timeout`` seconds with what did arrive, rather
    than waiting on a stream that heartbeats keep alive."""
    events: list[t.Any] = []

    def run() -> None:
        for _ in range(count):
            try:
                events.extend(client.take(1))
            except StopIteration:
                raise AssertionError(
                    f"the stream ended after {len(events)} of {count} events: {_brief(events)}"
                ) from None

    if not Background(run).join(timeout):
        raise AssertionError(
            f"{len(events)} of {count} events arrived within {timeout} s: {_brief(events)}"
        )
    return events


def _brief(events: t.Sequence[t.Any]) -> list[tuple[str, str, str]]:
    return [(event.id, event.event, event.data[:40]) for event in events]


def consumers(server: Server) -> int:
    return int(server.stats()["consumers"])


# --- headers, retry, framing ------------------------------------------------------------


def test_stream_headers_and_retry_first(serve: Serve, raw: OpenWire) -> None:
    """Headers: Content-Type, Cache-Control, X-Accel-Buffering; the stream opens with retry."""
    server = serve(env={"SSE_RETRY_MS": "1234"})
    wire = raw(server)
    assert wire.status == 200
    headers = wire.headers
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    # The first bytes of the body, once the chunked framing is taken off.
    assert wire.body.startswith(b"retry: 1234\n"), wire.body[:100]
    assert not wire.body.startswith(b"retry: 1234\n\n"), (
        "a blank line would dispatch an empty event"
    )
    wire.close()


HOSTILE = [
    ("crlf", "one\r\ntwo\r\nthree", "one\ntwo\nthree"),
    ("lone-cr", "one\rtwo\r", "one\ntwo\n"),
    ("lf-and-trailing-lf", "one\ntwo\n", "one\ntwo\n"),
    ("only-crlf", "\r\n", "\n"),
    ("empty", "", ""),
    (
        "fields-in-data",
        "data: forged\nid: 999\nevent: evil\nretry: 1\n\ndata: second",
        "data: forged\nid: 999\nevent: evil\nretry: 1\n\ndata: second",
    ),
    ("fields-after-cr", "id: 1\r\n\r\nevent: x\rdata: y", "id: 1\n\nevent: x\ndata: y"),
    ("colon-line", "before\n:\nafter", "before\n:\nafter"),
    ("only-colon", ":", ":"),
    ("comment-like", ": comment-like", ": comment-like"),
    (
        "leading-spaces",
        "  two leading spaces\n one\n\tand a tab",
        "  two leading spaces\n one\n\tand a tab",
    ),
    ("one-space", " ", " "),
    (
        "unicode",
        "h\u00e9llo \u2028 line separator \u2029 paragraph \u0085 next line \x0b\x0c\x1c \U0001f600 \U0001f469\u200d\U0001f469\u200d\U0001f467 \ufeffbom",
        "h\u00e9llo \u2028 line separator \u2029 paragraph \u0085 next line \x0b\x0c\x1c \U0001f600 \U0001f469\u200d\U0001f469\u200d\U0001f467 \ufeffbom",
    ),
    ("nul", "nul\x00inside", "nul\x00inside"),
    ("60KB-one-line", "0123456789abcdef" * 3840, "0123456789abcdef" * 3840),
    ("60KB-many-lines", "line of text\r\n" * 4389, "line of text\n" * 4389),
    (
        "json-object",
        {"b": [True, None, "x\ny"], "a": 1.5, "\u00fc": "\U0001f600"},
        '{"b":[true,null,"x\\ny"],"a":1.5,"\u00fc":"\U0001f600"}',
    ),
    ("json-array", [1, "two", {}], '[1,"two",{}]'),
    ("json-number", 42, "42"),
    ("json-null", None, "null"),
    ("json-false", False, "false"),
]


def test_hostile_payloads_arrive_exactly(server: Server, stream: Stream, raw: OpenWire) -> None:
    """data is split on CRLF, CR and LF, one data: line per line, so a conformant client
    receives exactly what was published, line breaks normalised to LF; a JSON value that is
    not a string arrives as its compact JSON text. Every event carries its own id:, and ids
    strictly increase in the broker's order."""
    client = stream(server.url)
    wire = raw(server)
    ids = [server.say(published) for _, published, _ in HOSTILE]
    assert len(set(ids)) == len(ids)

    events = take(client, len(ids))
    for event, (name, _, expected) in zip(events, HOSTILE):
        assert event.data == expected, f"{name}: {event.data[:200]!r} != {expected[:200]!r}"
        assert event.event == "message", name
    assert [event.id for event in events] == ids, (
        "ids in order of receipt are not the ids in order of publish"
    )
    assert_increasing([event.id for event in events])

    # On the wire, each event has its own id: line first (httpx-sse would carry a previous
    # id over to an event that had none).
    wire.wait_for(lambda w: len(w.events()) >= len(ids), 20, f"{len(ids)} events on the raw stream")
    on_wire = wire.events()
    assert [event["lines"][0] for event in on_wire] == [f"id: {event_id}" for event_id in ids]
    assert [event["data"] for event in on_wire] == [expected for _, _, expected in HOSTILE]
    wire.close()


def test_event_line_only_when_not_message(server: Server, stream: Stream, raw: OpenWire) -> None:
    """event: is written only when the type is not message."""
    client = stream(server.url)
    wire = raw(server)
    plain = server.say("plain")
    explicit = server.say("explicit", event="message")
    custom = server.say("custom", event="greeting")
    spaced = server.say("spaced", event=" odd type: with colon ")

    wire.wait_for(lambda w: len(w.events()) >= 4, 10, "4 events")
    frames = {event["id"]: event["lines"] for event in wire.events()}
    assert frames[plain] == [f"id: {plain}", "data: plain"]
    assert frames[explicit] == [f"id: {explicit}", "data: explicit"]
    assert frames[custom] == [f"id: {custom}", "event: greeting", "data: custom"]
    assert frames[spaced] == [f"id: {spaced}", "event:  odd type: with colon ", "data: spaced"]

    events = take(client, 4)
    assert [(event.event, event.data) for event in events] == [
        ("message", "plain"),
        ("message", "explicit"),
        ("greeting", "custom"),
        (" odd type: with colon ", "spaced"),
    ]
    wire.close()


# --- channels ---------------------------------------------------------------------------


def test_channels_are_isolated_and_combined(server: Server, stream: Stream) -> None:
    """GET /events ?channel=NAME may repeat (one stream, several channels); none means the
    default channel default."""
    only_a = stream(server.url, channels=["a"])
    a_and_b = stream(server.url, channels=["a", "b"])
    a_twice = stream(server.url, channels=["a", "a"])
    unnamed = stream(server.url)

    published = [
        ("b1", "b"),
        ("a1", "a"),
        ("d1", None),
        ("b2", "b"),
        ("a2", "a"),
        ("d2", "default"),
        ("c1", "c"),
        ("a3", "a"),
        ("b3", "b"),
    ]
    ids = {
        data: server.say(data, **({"channel": channel} if channel else {}))
        for data, channel in published
    }

    def received(client: StreamClient, count: int) -> list[tuple[str, str]]:
        return [(event.data, event.id) for event in take(client, count)]

    def expected(*names: str) -> list[tuple[str, str]]:
        return [(name, ids[name]) for name in names]

    # Each list ends with the channel's last event, so anything foreign would show up in it.
    assert received(only_a, 3) == expected("a1", "a2", "a3")
    assert received(a_twice, 3) == expected("a1", "a2", "a3")
    assert received(a_and_b, 6) == expected("b1", "a1", "b2", "a2", "a3", "b3")
    assert received(unnamed, 2) == expected("d1", "d2")

    # Nothing further was queued for them: the next event each receives is the next published.
    last = server.say("a4", channel="a")
    assert received(a_and_b, 1) == [("a4", last)]
    assert received(a_twice, 1) == [("a4", last)]
    assert server.stats()["channels"] == {"a": 3, "b": 1, "default": 1}

    # Resuming several channels replays theirs, in the broker's order, and nothing else.
    resumed = stream(server.url, channels=["b", "a"], last_event_id=ids["b1"])
    assert received(resumed, 6) == [*expected("a1", "b2", "a2", "a3", "b3"), ("a4", last)]


# --- fan-out ----------------------------------------------------------------------------


def test_many_streams_receive_the_same_events_in_order(server: Server, raw: OpenWire) -> None:
    """One worker holds many open streams; each receives every event, in the broker's order."""
    wires = [raw(server, ready=False) for _ in range(100)]
    try:
        wait_until(lambda: consumers(server) == 100, 30, "100 streams to be registered")
        ids = [
            server.say(f"event {n}", **({"event": "tick"} if n % 3 == 0 else {})) for n in range(20)
        ]
        pump_all(wires, lambda w: len(w.events()) >= 20, 60)
        expected = [(event_id, f"event {n}") for n, event_id in enumerate(ids)]
        for wire in wires:
            assert [(event["id"], event["data"]) for event in wire.events()] == expected
            assert [event.get("event", "message") for event in wire.events()] == [
                "tick" if n % 3 == 0 else "message" for n in range(20)
            ]
    finally:
        for wire in wires:
            wire.close()


# --- resume -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_replays_exactly_what_was_missed(server: Server, stream: Stream, how: str) -> None:
    """Resume: a Last-Event-ID header (or lastEventId query parameter) replays, in order,
    every retained event after that id on the requested channels, then continues live: no
    duplicates, no gaps."""
    first = stream(server.url)
    seen_ids = [server.say(f"seen {n}") for n in range(3)]
    seen = take(first, 3)
    assert [event.id for event in seen] == seen_ids
    first.close()

    missed_ids = []
    for n in range(5):
        server.say(f"elsewhere {n}", channel="elsewhere")  # not on the stream's channel
        missed_ids.append(server.say(f"missed {n}", event="note" if n == 2 else None))

    if how == "header":
        resumed = stream(server.url, last_event_id=seen[-1].id)
    else:
        resumed = stream(server.url, params={"lastEventId": seen[-1].id})
    replay = take(resumed, 5)
    assert [(event.id, event.data, event.event) for event in replay] == [
        (event_id, f"missed {n}", "note" if n == 2 else "message")
        for n, event_id in enumerate(missed_ids)
    ]

    live_ids = [server.say("live 1"), server.say("live 2")]
    live = take(resumed, 2)
    assert [(event.id, event.data) for event in live] == list(zip(live_ids, ["live 1", "live 2"]))
    assert_increasing(seen_ids + missed_ids + live_ids)


def test_resume_from_an_id_older_than_the_history_says_missed(serve: Serve, stream: Stream) -> None:
    """When the id is older than what is retained, the stream first sends event: missed with
    JSON data {"last_event_id", "oldest_retained"}, then replays everything retained, then
    continues live: never a silent loss."""
    server = serve(env={"SSE_HISTORY": "3", "SSE_HEARTBEAT": "5"})
    first = stream(server.url)
    ids = [server.say("event 0")]
    (event,) = take(first, 1)
    assert event.id == ids[0]
    first.close()
    ids += [server.say(f"event {n}") for n in range(1, 10)]

    resumed = stream(server.url, last_event_id=ids[0])
    missed, *replay = take(resumed, 4)
    assert missed.event == "missed"
    assert json.loads(missed.data) == {"last_event_id": ids[0], "oldest_retained": ids[7]}
    assert missed.id, "the missed event carries an id"
    assert [(event.id, event.data) for event in replay] == [
        (ids[n], f"event {n}") for n in (7, 8, 9)
    ]
    assert_increasing([missed.id, *ids[7:]])

    live = server.say("live")
    assert [(event.id, event.data) for event in take(resumed, 1)] == [(live, "live")]

    # A client cut off right after the missed event resumes from its id with the full replay.
    again = stream(server.url, last_event_id=missed.id)
    assert [event.id for event in take(again, 4)] == [ids[7], ids[8], ids[9], live]


def test_resume_from_an_unknown_id_says_missed(serve: Serve, stream: Stream) -> None:
    """An unknown id (garbage, or one this broker never issued): event: missed first, then
    everything retained on the channel, then live."""
    server = serve(env={"SSE_HEARTBEAT": "5"})
    ids = [server.say("one"), server.say("two")]
    server.say("elsewhere", channel="elsewhere")
    ids.append(server.say("three"))
    real = ids[-1]
    unknown = [
        "garbage",
        "0",
        "-1",
        "99999999999999999999",
        " ",
        real + "0000",  # the same shape, a number not issued yet
        re.sub(r"\d+$", "\u0663", real),  # a digit, but not an ASCII one
        re.sub(r"\d+$", "", real),
        "x" + real,
    ]
    for n, garbage in enumerate(unknown):
        resumed = stream(server.url, params={"lastEventId": garbage})
        missed, *replay = take(resumed, 4)
        assert missed.event == "missed", garbage
        assert json.loads(missed.data) == {"last_event_id": garbage, "oldest_retained": ids[0]}, (
            garbage
        )
        assert [(event.id, event.data) for event in replay] == list(
            zip(ids, ["one", "two", "three"])
        ), garbage
        server.say(f"live {n}", channel="elsewhere")  # keeps the replay the same for the next one
        live = server.say(f"live {n}", channel="live")
        listener = stream(server.url, channels=["live"], params={"lastEventId": garbage})
        assert [event.event for event in take(listener, 2)] == ["missed", "message"]
        resumed.close()
        listener.close()
    # Live after the replay, on the resumed stream itself.
    resumed = stream(server.url, last_event_id="garbage")
    assert [event.event for event in take(resumed, 4)] == [
        "missed",
        "message",
        "message",
        "message",
    ]
    live = server.say("live")
    assert [event.id for event in take(resumed, 1)] == [live]


def test_resume_with_an_id_from_a_restarted_server_says_missed(
    serve: Serve, stream: Stream
) -> None:
    """Ids carry enough to tell one broker's lifetime from the next: an id issued before a
    restart is unknown afterwards (missed, then the replay), never mistaken for a new one."""
    before = serve(env={"SSE_HEARTBEAT": "5"})
    old_ids = [before.say(f"old {n}") for n in range(3)]
    before.stop()

    after = serve(env={"SSE_HEARTBEAT": "5"})
    new_ids = [after.say(f"new {n}") for n in range(3)]
    assert not set(old_ids) & set(new_ids), (
        "a restarted broker handed out an id it had handed out before"
    )

    resumed = stream(after.url, last_event_id=old_ids[-1])
    missed, *replay = take(resumed, 4)
    assert missed.event == "missed"
    assert json.loads(missed.data) == {"last_event_id": old_ids[-1], "oldest_retained": new_ids[0]}
    assert [(event.id, event.data) for event in replay] == [
        (new_ids[n], f"new {n}") for n in range(3)
    ]
    live = after.say("live")
    assert [event.id for event in take(resumed, 1)] == [live]


# --- heartbeat and going away -----------------------------------------------------------


def test_idle_stream_gets_heartbeat_comments(serve: Serve, stream: Stream, raw: OpenWire) -> None:
    """While idle, a comment line (: ...) goes out at least every SSE_HEARTBEAT seconds."""
    server = serve(env={"SSE_HEARTBEAT": "0.5"})
    wire = raw(server)
    opened = time.monotonic()
    arrivals: list[float] = []
    while len(arrivals) < 4:
        wire.wait_for(
            lambda w: len(w.comments()) > len(arrivals), 5, f"heartbeat comment {len(arrivals) + 1}"
        )
        arrivals.append(time.monotonic())
    gaps = [b - a for a, b in zip([opened, *arrivals], arrivals)]
    # 0.5 s asked; a loaded machine may add some lateness, never a missing beat.
    assert max(gaps) < 1.25, f"gaps between heartbeats: {gaps}"
    assert arrivals[-1] - opened < 3.5
    assert wire.events() == []

    # A client that we did not write dispatches nothing for them.
    client = stream(server.url)
    event_id = server.say("after the beats")
    assert [event.id for event in take(client, 1)] == [event_id]
    wire.close()


def test_closed_streams_are_removed_within_a_heartbeat(serve: Serve, raw: OpenWire) -> None:
    """A client that goes away is removed from the registry: at once where the server can
    see the socket close, at the latest at the next heartbeat."""
    heartbeat = 2.0
    server = serve(env={"SSE_HEARTBEAT": str(heartbeat)})
    baseline = consumers(server)
    wires = [raw(server, f"/events?channel=c{n % 7}", ready=False) for n in range(200)]
    try:
        wait_until(lambda: consumers(server) == baseline + 200, 30, "200 streams to be registered")
    finally:
        closed_at = time.monotonic()
        for wire in wires:
            wire.close()
    wait_until(
        lambda: consumers(server) == baseline, heartbeat + 5, "the closed streams to be removed"
    )
    elapsed = time.monotonic() - closed_at
    assert elapsed < heartbeat + 1, f"closed streams were removed after {elapsed:.2f} s"
    assert server.stats()["channels"] == {}
    # The worker goes on serving.
    wire = raw(server)
    event_id = server.say("still here")
    wire.wait_for(lambda w: w.events(), 10, "an event")
    assert wire.events()[0]["id"] == event_id
    wire.close()


def test_a_client_that_vanishes_is_removed_at_once(serve: Serve, raw: OpenWire) -> None:
    """The server sees the socket close without writing anything (no heartbeat is due for a
    minute), and removes the stream at once."""
    server = serve(env={"SSE_HEARTBEAT": "60"})
    wires = [raw(server) for _ in range(3)]
    assert consumers(server) == 3

    wires[0].close()
    closed_at = time.monotonic()
    wait_until(lambda: consumers(server) == 2, 5, "the closed stream to be removed")
    assert time.monotonic() - closed_at < 1.5

    event_id = server.say("to those left")
    for wire in wires[1:]:
        wire.wait_for(lambda w: w.events(), 10, "an event")
        assert wire.events()[0]["id"] == event_id
    for wire in wires:
        wire.close()


# --- slow consumers ---------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_slow_consumer_is_cut_off_without_delaying_others(serve: Serve, stream: Stream) -> None:
    """A client that falls SSE_QUEUE_SIZE events behind is cut off (counted in dropped). One
    slow reader never delays the others, and never makes the server buffer without bound."""
    # A short history, so that what the worker holds for resumes (shared by every stream)
    # does not hide what it would buffer per client: 10 MB go out, and the frames retained
    # (20) and queued for the slow client (50) are 4.5 MB at most.
    server = serve(env={"SSE_QUEUE_SIZE": "50", "SSE_HEARTBEAT": "5", "SSE_HISTORY": "20"})
    (worker,) = server.worker_pids()

    # A client that never reads, with a small receive window so that the server's writes block.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_until(lambda: consumers(server) == 1, 10, "the slow stream to be registered")
        client = stream(server.url, timeout=30)
        assert consumers(server) == 2

        published, received, rss_growth = _flood(
            server, client, worker, count=160, size=64000
        )  # 10 MB

        assert [event_id for event_id, _, _ in received] == [event_id for event_id, _ in published]
        for n, (_, _, data) in enumerate(received):
            assert data == _flood_data(n, 64000), f"event {n} arrived altered"
        latencies = sorted(
            arrived - sent for (_, sent), (_, arrived, _) in zip(published, received)
        )
        assert latencies[-1] < 1.0, (
            f"slowest delivery {latencies[-1]:.2f} s (median {latencies[len(latencies) // 2]:.3f} s)"
        )

        stats = wait_until(
            lambda: (s := server.stats())["dropped"] >= 1 and s["consumers"] == 1 and s,
            10,
            "the slow stream to be dropped",
        )
        assert stats["dropped"] == 1 and stats["channels"] == {"default": 1}
        # Measured: 4 MiB. A server that kept a copy of what it sent, or of all the slow
        # client missed, would grow by 10 MB or more.
        assert rss_growth < 8, f"the worker grew by {rss_growth:.1f} MiB"

        # The slow client's connection was ended: it reads what was buffered, then the end.
        with contextlib.suppress(ConnectionResetError):
            while slow.recv(1 << 20):
                pass

    # Afterwards a fresh client works, and so does the one that kept up.
    fresh = stream(server.url)
    event_id = server.say("after the flood")
    assert [event.id for event in take(fresh, 1)] == [event_id]
    assert [event.id for event in take(client, 1)] == [event_id]


def _flood_data(n: int, size: int) -> str:
    return f"{n:05d}" + chr(ord("a") + n % 26) * (size - 5)


def _flood(
    server: Server, client: StreamClient, worker: int, *, count: int, size: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float, str]], float]:
    """Publish ``count`` events of ``size`` bytes while ``client`` reads them in a thread.

    Return (id, time sent) per publish, (id, time received, data) per event received, and
    how much the worker's resident memory grew at its peak, in MiB.
    """
    received: list[tuple[str, float, str]] = []

    def read() -> None:
        for _ in range(count):
            (event,) = client.take(1)  # one at a time, to time each arrival
            received.append((event.id, time.monotonic(), event.data))

    reader = Background(read)
    published: list[tuple[str, float]] = []
    rss_before = rss_peak = _rss_kib(worker)
    for n in range(count):
        sent = time.monotonic()
        published.append((server.say(_flood_data(n, size)), sent))
        rss_peak = max(rss_peak, _rss_kib(worker))
    assert reader.join(60), f"the normal client received {len(received)} of {count} events"
    rss_peak = max(rss_peak, _rss_kib(worker))
    return published, received, (rss_peak - rss_before) / 1024


# --- ending streams ---------------------------------------------------------------------


def test_graceful_reload_ends_open_streams_at_once(
    server: Server, stream: Stream, raw: OpenWire
) -> None:
    """A stopping worker ends its streams at once, instead of holding them until the graceful
    timeout (10 s), so clients reconnect to a new worker."""
    wire = raw(server)
    before = server.say("before the reload")
    wire.wait_for(lambda w: w.events(), 10, "an event")
    ended: list[float] = []

    def wait_end() -> None:
        wire.wait_closed(20)
        ended.append(time.monotonic())
        wire.close()  # or the stopping worker keeps it open for keep-alive

    watcher = Background(wait_end)
    started = time.monotonic()
    server.reload()
    assert watcher.join(20), "the open stream did not end"
    assert ended[0] - started < 5, f"the stream ended {ended[0] - started:.2f} s after SIGHUP"

    # The browser reconnects with its last id, which the new worker's broker never issued.
    resumed = stream(server.url, last_event_id=before)
    (missed,) = take(resumed, 1)
    assert missed.event == "missed"
    assert json.loads(missed.data)["last_event_id"] == before
    client = stream(server.url)
    event_id = server.say("after the reload")
    assert event_id != before
    assert [(event.id, event.data) for event in take(client, 1)] == [(event_id, "after the reload")]
    assert [(event.id, event.data) for event in take(resumed, 1)] == [
        (event_id, "after the reload")
    ]


def test_a_stopping_worker_ends_streams_opened_after_the_stop(
    server: Server, raw: OpenWire
) -> None:
    """A stopping worker's streams end at once, so that clients reconnect to another worker;
    that includes a reconnect that arrives on the kept-alive connection of a stream it just
    ended (browsers reuse it: SSE_RETRY_MS, 3 s, is shorter than gunicorn's keep-alive, 5 s).
    Served there, it would hear nothing published on the new worker until the graceful
    timeout (10 s). Refusing it (any status but 200) would do as well, and so does closing the
    connection, as a parked stream does at its end (its response said ``Connection: close``,
    which this client ignores)."""
    first = raw(server)
    reconnected: list[RawStream] = []
    ended: list[float] = []

    def reconnect() -> None:
        first.wait_closed(20)
        again = first.reuse()
        reconnected.append(again)
        again.wait_for(lambda w: b"\r\n\r\n" in w.received or w.eof, 10, "a response head")
        if again.status == 200:
            again.wait_closed(20)
        ended.append(time.monotonic())

    watcher = Background(reconnect)
    started = time.monotonic()
    server.reload()
    assert watcher.join(25), "the reconnected stream did not end"
    again = reconnected[0]
    took = ended[0] - started
    assert again.status != 200 or took < 5, (
        f"a stream opened on the stopping worker after its streams were closed lasted until {took:.1f} s after SIGHUP; "
        f"it received {again.body[-300:]!r}"
    )


def test_max_stream_seconds_closes_and_resume_loses_nothing(
    serve: Serve, stream: Stream, raw: OpenWire
) -> None:
    """SSE_MAX_STREAM_SECONDS closes each stream after this lifetime (with jitter); the client
    resumes with Last-Event-ID: no duplicates, no gaps."""
    server = serve(
        env={"SSE_MAX_STREAM_SECONDS": "1", "SSE_HEARTBEAT": "0.3", "SSE_HISTORY": "100000"}
    )
    published: list[str] = []
    stop = threading.Event()

    def publish() -> None:  # publishes all along, before, around and after the close
        while not stop.is_set():
            published.append(server.say(f"n{len(published)}"))

    opened = time.monotonic()
    wire = raw(server)
    publisher = Background(publish)
    try:
        wire.wait_closed(10)
        lifetime = time.monotonic() - opened
        assert 0.8 <= lifetime <= 3, f"the stream lasted {lifetime:.2f} s"
        seen = len(published)
        wait_until(
            lambda: len(published) >= seen + 5 or publisher.join(0),
            10,
            "more publishes after the close",
        )
    finally:
        stop.set()
    assert publisher.join(10)
    before_close = wire.events()
    assert before_close, "nothing arrived before the close"
    got = [event["id"] for event in before_close]
    assert got == published[: len(got)]

    resumed = stream(server.url, last_event_id=got[-1])
    rest = take(resumed, len(published) - len(got))
    assert got + [event.id for event in rest] == published
    assert [event.data for event in rest] == [f"n{n}" for n in range(len(got), len(published))]


# --- publishing from elsewhere ----------------------------------------------------------


def test_publish_from_another_process_reaches_a_stream(server: Server, stream: Stream) -> None:
    """sse.publish from other processes or the command line: sse-flask say MESSAGE --url URL
    [--channel C] [--event E]."""
    default = stream(server.url)
    news = stream(server.url, channels=["news"])
    env = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}

    def say(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sse_flask", "say", *args, "--url", server.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = say("hello from another process")
    second = say("extra! extra!", "--channel", "news", "--event", "headline")
    assert [(event.id, event.event, event.data) for event in take(default, 1)] == [
        (first, "message", "hello from another process")
    ]
    assert [(event.id, event.event, event.data) for event in take(news, 1)] == [
        (second, "headline", "extra! extra!")
    ]
