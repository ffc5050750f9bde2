"""``/metrics``: Prometheus text summed over every gunicorn worker, and the log line each
stream leaves when it closes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import time
import typing as t

from helpers.servers import Server
from helpers.sse import RawStream, StreamClient
from helpers.wait import wait_until


def sample(server: Server, name: str) -> float:
    """One sample of ``name`` (summed over workers by the server), from whichever worker answers."""
    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    match = re.search(rf"^{name} (\S+)$", response.text, re.MULTILINE)
    assert match, f"{name} missing from /metrics:\n{response.text}"
    return float(match[1])


def test_open_streams_are_summed_over_four_workers(serve: t.Callable[..., Server]) -> None:
    """40 streams spread over 4 workers: every worker's /metrics says 40, not its own share;
    a SIGKILLed worker's streams drop out of the sum."""
    server = serve(workers=4)
    at_rest = {pid: _sockets(pid) for pid in server.worker_pids()}
    streams = [RawStream(server.port) for _ in range(40)]
    try:
        for raw in streams:
            raw.read_until(b"retry:")
        held = {pid: _sockets(pid) - at_rest[pid] for pid in at_rest}
        assert sum(1 for count in held.values() if count) >= 2, (
            f"streams not spread over workers: {held}"
        )
        for _ in range(12):  # each request may land on any worker: all must agree
            assert sample(server, "sse_streams_open") == 40
        victim = max(held, key=held.__getitem__)
        os.kill(victim, signal.SIGKILL)
        dead = wait_until(
            lambda: _settled(lambda: sum(map(_closed, streams))),
            20,
            "the killed worker's streams to end",
        )
        wait_until(
            lambda: sample(server, "sse_streams_open") == 40 - dead,
            20,
            f"the killed worker's {dead} streams to drop out",
        )
    finally:
        for raw in streams:
            raw.close()
    wait_until(lambda: sample(server, "sse_streams_open") == 0, 20, "every stream to close")


def _settled(count: t.Callable[[], int]) -> int:
    """``count()`` if it is the same 0.2 s later, else 0: the first of a killed worker's
    connections can be seen closed while the kernel is still closing the others."""
    first = count()
    time.sleep(0.2)
    return first if first == count() else 0


def _closed(raw: RawStream) -> bool:
    """Whether the server has closed ``raw``'s connection (a killed worker's streams)."""
    readable, _, _ = select.select([raw.sock], [], [], 0)
    if not readable:
        return False
    try:
        return raw.sock.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionError:
        return True


def _sockets(pid: int) -> int:
    fds = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"{fds}/{fd}").startswith("socket:")
    return count


def test_counters_and_close_log(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient]
) -> None:
    """Published, frames and bytes sent, replays and ``missed`` are counted; a closed stream
    logs why it closed, how long it lasted, and what it sent."""
    server = serve(env={"SSE_HISTORY": "2"})
    client = stream(server.url, channels=["metered"])
    first = server.say("one", channel="metered")
    assert [e.data for e in client.take(1)] == ["one"]
    client.close()
    for n in range(3):
        server.say(f"later {n}", channel="metered")
    resumed = stream(server.url, channels=["metered"], last_event_id=first)
    events = resumed.take(3)
    # SSE_HISTORY=2 keeps "later 1" and "later 2" only: "later 0" is announced missing.
    assert [(e.event, e.data) for e in events[1:]] == [("message", f"later {n}") for n in (1, 2)]
    assert events[0].event == "missed" and json.loads(events[0].data)["last_event_id"] == first
    resumed.close()
    assert sample(server, "sse_events_published_total") == 4
    wait_until(lambda: sample(server, "sse_frames_sent_total") >= 4, 10, "frames to be counted")
    assert sample(server, "sse_bytes_sent_total") > 0
    assert sample(server, "sse_replays_total") == 1
    assert sample(server, "sse_missed_sent_total") == 1
    assert sample(server, "sse_publish_latency_seconds_count") == 4
    log = wait_until(
        lambda: server.log().count("stream closed") >= 2 and server.log(), 10, "close log lines"
    )
    closed = r"stream closed \(client went away\) after [0-9.]+ s: (\d+) events, (\d+) bytes"
    lines = re.findall(closed + ", channels metered", log)
    # The first stream sent "one"; the resumed one sent missed, "later 1" and "later 2".
    assert [int(events) for events, _ in lines] == [1, 3], log
    # Each line's bytes are what its stream wrote: together, all this worker sent.
    assert sum(int(size) for _, size in lines) == sample(server, "sse_bytes_sent_total"), log
    assert sample(server, "sse_frames_sent_total") == 4


def test_missed_is_counted(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient]
) -> None:
    server = serve()
    server.say("x")
    client = stream(server.url, last_event_id="unknown-1")
    assert client.take(1)[0].event == "missed"
    assert sample(server, "sse_missed_sent_total") == 1
