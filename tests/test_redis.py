"""The Redis broker across real gunicorn workers and hosts, against a real redis-server
that the tests stop and restart: fan-out to every worker, resume anywhere, constant Redis
connections, and faults (Redis restarted, a worker SIGKILLed)."""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import httpx
import httpx_sse
import httpx_sse._decoders as sse_decoders
import pytest
import requests
from helpers.env import free_port, need
from helpers.proxy import Proxy
from helpers.redis import RedisServer
from helpers.retry import say_until_answered
from helpers.servers import Server
from helpers.sse import RawStream, StreamClient
from helpers.wait import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_flask.broker.redis import RedisBroker
from sse_flask.broker.redis_stream import STREAM_KEY
from sse_flask.errors import BrokerUnavailable
from sse_flask.events import Event, encode_event

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def _enough_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


class RawClients:
    """Many streams read in one thread: HTTP/1.0 requests (so the body is the bare event
    stream, no chunked framing) parsed with httpx-sse's decoder, a parser we did not write."""

    def __init__(self, port: int, count: int, path: str = "/events") -> None:
        self.selector = selectors.DefaultSelector()
        self.events: list[list[httpx_sse.ServerSentEvent]] = []
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            sock.setblocking(False)
            state = {
                "index": index,
                "head": b"",
                "body": False,
                "text": codecs.getincrementaldecoder("utf-8")(),
                "lines": sse_decoders.SSELineDecoder(),
                "sse": sse_decoders.SSEDecoder(),
            }
            self.selector.register(sock, selectors.EVENT_READ, state)
            self.events.append([])

    def read(self, until: t.Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"timed out; events per stream: {sorted({len(e) for e in self.events})}"
            )
            for key, _ in self.selector.select(min(remaining, 0.5)):
                chunk = key.fileobj.recv(262144)  # type: ignore[union-attr]
                assert chunk, f"stream {key.data['index']} closed early"
                self._feed(key.data, chunk)

    def data(self, index: int) -> list[str]:
        return [event.data for event in self.events[index] if event.data]

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _feed(self, state: dict[str, t.Any], chunk: bytes) -> None:
        if not state["body"]:
            state["head"] += chunk
            if b"\r\n\r\n" not in state["head"]:
                return
            head, _, chunk = state["head"].partition(b"\r\n\r\n")
            assert head.split(b" ", 2)[1] == b"200", head
            state["body"] = True
        for line in state["lines"].decode(state["text"].decode(chunk)):
            event = state["sse"].decode(line)
            if event is not None and event.data:
                self.events[state["index"]].append(event)


@pytest.fixture
def raw_clients() -> t.Iterator[t.Callable[..., RawClients]]:
    """Open many raw streams: ``raw_clients(port, count, path="/events")``; closed at teardown."""
    opened: list[RawClients] = []

    def open_clients(port: int, count: int, path: str = "/events") -> RawClients:
        clients = RawClients(port, count, path)
        opened.append(clients)
        return clients

    yield open_clients
    for clients in opened:
        clients.close()


def socket_counts(server: Server) -> dict[int, int]:
    """Open sockets per worker, from /proc."""
    counts = {}
    for pid in server.worker_pids():
        fds = f"/proc/{pid}/fd"
        counts[pid] = sum(1 for fd in os.listdir(fds) if _link(f"{fds}/{fd}").startswith("socket:"))
    return counts


def _link(path: str) -> str:
    """Where a /proc fd link points, or "" if the fd was closed meanwhile."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return ""


def test_every_stream_on_every_worker_gets_each_event_once_in_order(
    serve: t.Callable[..., Server],
    redis_server: RedisServer,
    raw_clients: t.Callable[..., RawClients],
) -> None:
    """400 streams over 4 workers each receive all 100 events exactly once, in one order."""
    server = serve(workers=4, broker=redis_server.url)
    before = socket_counts(server)
    clients = raw_clients(server.port, 400)
    wait_until(
        lambda: sum(socket_counts(server).values()) - sum(before.values()) >= 400, 30, "400 streams"
    )
    spread = {pid: count - before.get(pid, 0) for pid, count in socket_counts(server).items()}
    assert sum(1 for added in spread.values() if added >= 20) >= 2, (
        f"streams not spread over workers: {spread}"
    )
    sent = [f"event {n}" for n in range(100)]
    session = requests.Session()
    for data in sent:
        assert session.post(server.url + "/say", json={"data": data}, timeout=10).status_code == 200
    clients.read(lambda: all(len(events) >= 100 for events in clients.events), 60)
    for index in range(400):
        assert clients.data(index) == sent
    ids = [event.id for event in clients.events[0]]
    assert all(clients.events[i][n].id == ids[n] for i in range(400) for n in range(100))


def redis_clients(redis_server: RedisServer) -> int:
    """Connections Redis holds, less the one asking."""
    return len(redis_server.client().client_list()) - 1


def test_redis_connections_per_worker_do_not_grow_with_streams(
    serve: t.Callable[..., Server],
    redis_server: RedisServer,
    raw_clients: t.Callable[..., RawClients],
) -> None:
    """One worker holds the same number of Redis connections with 10 and with 1,000 streams."""
    server = serve(broker=redis_server.url)
    opened = 0

    def exercise(clients: RawClients) -> None:
        nonlocal opened
        opened += len(clients.events)
        wait_until(lambda: server.stats()["consumers"] == opened, 30, f"{opened} streams")
        first = server.say("warm-up")
        clients.read(lambda: all(events for events in clients.events), 30)
        with StreamClient(server.url, last_event_id=first) as resumed:
            server.say("resumed")
            assert [event.data for event in resumed.take(1)] == ["resumed"]

    exercise(raw_clients(server.port, 10))
    with_ten = redis_clients(redis_server)
    exercise(raw_clients(server.port, 990))
    with_thousand = redis_clients(redis_server)
    assert with_ten == with_thousand
    assert with_thousand <= 1 + 8, "one reader and a pool of at most 8"


def test_streams_resuming_together_share_one_history_read(
    serve: t.Callable[..., Server],
    redis_server: RedisServer,
    raw_clients: t.Callable[..., RawClients],
) -> None:
    """50 streams resuming from one id at once (a reconnect storm) cost Redis one read of
    the history, not 50, and each replays every event after the id once, in order."""
    server = serve(broker=redis_server.url)
    ids = [server.say(f"event {n}") for n in range(5)]
    redis = redis_server.client()
    redis.config_resetstat()
    before = sum(socket_counts(server).values())
    # Redis holds the history script (it may write the epoch) until unpaused, so every
    # resume arrives while the first one's read is in flight.
    redis.execute_command("CLIENT", "PAUSE", 20000, "WRITE")
    try:
        clients = raw_clients(server.port, 50, f"/events?lastEventId={ids[0]}")
        wait_until(
            lambda: sum(socket_counts(server).values()) - before >= 50, 15, "50 streams accepted"
        )
    finally:
        redis.execute_command("CLIENT", "UNPAUSE")
    clients.read(lambda: all(len(events) >= 4 for events in clients.events), 30)
    for index in range(50):
        assert clients.data(index) == [f"event {n}" for n in range(1, 5)]
    stats = redis.info("commandstats")
    reads = stats.get("cmdstat_xrange", {}).get("calls", 0)
    # One, or a straggler or two that reached the broker after the read had returned.
    assert 1 <= reads <= 3, f"{reads} history reads for 50 resumes from one id"


def test_resume_on_another_host_after_events_published_elsewhere(
    serve: t.Callable[..., Server], redis_server: RedisServer, stream: t.Callable[..., StreamClient]
) -> None:
    """Two gunicorn instances (two hosts) share Redis: a publish on one reaches streams on
    the other, and a client resumes on either with nothing lost."""
    host_a = serve(broker=redis_server.url)
    host_b = serve(broker=redis_server.url)
    on_b = stream(host_b.url, channels=["news"])
    first = host_a.say("one", channel="news")
    [event] = on_b.take(1)
    assert (event.data, event.id) == ("one", first)
    on_b.close()
    missed = [host_a.say(f"while away {n}", channel="news") for n in range(5)]
    host_a.say("elsewhere", channel="other")
    resumed = stream(host_b.url, channels=["news"], last_event_id=first)
    host_a.say("live", channel="news")
    events = resumed.take(6)
    assert [e.id for e in events[:5]] == missed
    assert [e.data for e in events] == [f"while away {n}" for n in range(5)] + ["live"]


def worker_of(server: Server, client: StreamClient) -> int:
    """The worker that holds ``client``'s connection, found through /proc/net/tcp."""
    sock = client.response.extensions["network_stream"].get_extra_info("socket")
    local = f"0100007F:{server.port:04X}"
    remote = f"0100007F:{sock.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as table:
        inode = next(row.split()[9] for row in table if row.split()[1:3] == [local, remote])
    for pid in server.worker_pids():
        fds = f"/proc/{pid}/fd"
        if any(_link(f"{fds}/{fd}") == f"socket:[{inode}]" for fd in os.listdir(fds)):
            return pid
    raise AssertionError("no worker holds the stream")


def test_client_resumes_on_another_worker_after_sigkill(
    serve: t.Callable[..., Server], redis_server: RedisServer, stream: t.Callable[..., StreamClient]
) -> None:
    """SIGKILL the worker holding a stream; publishes go on through the other worker, and
    the client, reconnecting with Last-Event-ID, gets every one in order, no duplicates."""
    server = serve(workers=2, broker=redis_server.url)
    client = stream(server.url)
    last = server.say("before")
    assert [e.data for e in client.take(1)] == ["before"]
    victim = worker_of(server, client)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    # The connection ends at once, as an incomplete body (or a reset), not by the client's
    # read timeout (httpx.ReadTimeout, which is neither).
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.take(1)
    assert time.monotonic() - killed < 5, "the stream ended only by the client's read timeout"
    published = []
    for n in range(10):
        published.append(server.say(f"meanwhile {n}"))
    wait_until(
        lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
        30,
        "a replacement worker",
    )
    resumed = stream(server.url, last_event_id=last)
    published.append(server.say("after"))
    events = resumed.take(11)
    assert [e.id for e in events] == published
    assert [e.data for e in events] == [f"meanwhile {n}" for n in range(10)] + ["after"]


def test_redis_restart_midstream(
    serve: t.Callable[..., Server], redis_server: RedisServer, stream: t.Callable[..., StreamClient]
) -> None:
    """Redis stopped: /say answers 503 (nothing was sent), a resume 503 (try again),
    /healthz 503, the open stream stays open with heartbeats. Redis back: publishes are
    delivered to that same stream."""
    server = serve(broker=redis_server.url, env={"SSE_HEARTBEAT": "0.3"})
    client = stream(server.url)
    server.say("before")
    events_before = client.take(1)
    assert [e.data for e in events_before] == ["before"]
    redis_server.stop()
    during = server.post("/say", json={"data": "during"})
    assert during.status_code == 503
    assert "nothing was sent" in during.json()["error"]
    resume = server.get("/events", headers={"Last-Event-ID": events_before[0].id})
    assert (resume.status_code, resume.headers["Retry-After"]) == (503, "1")
    refusal = resume.json()["error"]
    assert refusal.startswith("the stream could not open, try again in a moment: "), refusal
    assert "Redis at" in refusal
    health = server.get("/healthz")
    assert health.status_code == 503 and health.json()["error"]
    # Open streams stay open: heartbeats keep arriving while Redis is away.
    raw = RawStream(server.port)
    try:
        raw.read_until(b": heartbeat", count=3)
    finally:
        raw.close()
    redis_server.start()
    wait_until(lambda: server.get("/healthz").status_code == 200, 20, "/healthz to recover")
    after = [server.say(f"after {n}") for n in range(3)]
    events = client.take(3)
    assert [e.id for e in events] == after
    assert [e.data for e in events] == ["after 0", "after 1", "after 2"]


def test_publish_from_other_processes(
    serve: t.Callable[..., Server], redis_server: RedisServer, stream: t.Callable[..., StreamClient]
) -> None:
    """`sse-flask say --broker` and a script calling sse.publish outside any request
    (tests/apps/publish_script.py) both reach a stream, without going through HTTP."""
    server = serve(broker=redis_server.url)
    client = stream(server.url, channels=["jobs"])
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "sse_flask",
            "say",
            "from the cli",
            "--broker",
            redis_server.url,
            "--channel",
            "jobs",
            "--event",
            "done",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    task = subprocess.run(
        [sys.executable, "-m", "apps.publish_script"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parent,
        env={**os.environ, "SSE_BROKER_URL": redis_server.url},
    )
    assert task.returncode == 0, task.stderr
    events = client.take(2)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("done", "from the cli", cli.stdout.strip()),
        ("done", '{"job":7}', task.stdout.strip()),
    ]


def test_publish_from_threads_in_a_worker_process(redis_server: RedisServer) -> None:
    """sse.publish from many OS threads of one process, outside requests, with Redis."""
    from flask import Flask

    from sse_flask import SSE

    app = Flask("threads")
    app.config["SSE_BROKER_URL"] = redis_server.url
    sse = SSE(app)
    subscription = app.extensions["sse"].broker.subscribe(["threads"], None, queue_size=1000)
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(20):
            event_id = sse.publish(f"{n}-{i}", channel="threads")
            with lock:
                ids.append(event_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 160
    received: list[tuple[str, str]] = []

    def receive() -> bool:
        for block in subscription.wait(0.1).decode().split("\n\n")[:-1]:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            received.append((fields["id"], fields["data"]))
        return len(received) >= 160

    wait_until(receive, 10, "the 160 events to be delivered")
    # Every event delivered once, with the id its publish returned, each thread's in the
    # order it published them.
    assert sorted(event_id for event_id, _ in received) == sorted(ids)
    for n in range(8):
        mine = [data for _, data in received if data.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(20)]
    app.extensions["sse"].broker.close()


# --- resume against trimming, deletion and data loss: a property ---------------------------


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisServer]:
    """One redis-server for every example of a property test (a fixture per example would
    start hundreds)."""
    need("redis-server", shutil.which("redis-server"))
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def property_broker(module_redis: RedisServer) -> t.Iterator[RedisBroker]:
    """A broker keeping the least history (100 entries, trimmed approximately)."""
    broker = RedisBroker(module_redis.url, history=0)
    yield broker
    broker.close()


def decoded(frames: list[bytes]) -> list[httpx_sse.ServerSentEvent]:
    """Frames as httpx-sse's decoder sees them."""
    lines, decoder = sse_decoders.SSELineDecoder(), sse_decoders.SSEDecoder()
    events = []
    for line in [*lines.decode(b"".join(frames).decode()), *lines.flush()]:
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from("ab"), st.integers(1, 150)),
        st.tuples(st.just("trim"), st.integers(0, 150), st.booleans()),
        st.tuples(st.just("delete"), st.integers(0, 10**6)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("resume"), st.integers(-1, 10**6), st.sampled_from(["a", "ab"])),
    ),
    max_size=20,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=_OPERATIONS)
def test_resume_replays_every_event_once_in_order_or_says_missed_before_the_gap(
    module_redis: RedisServer, property_broker: RedisBroker, operations: list[tuple[t.Any, ...]]
) -> None:
    """Publishes (trimmed by the broker's ``MAXLEN ~``), exact and approximate ``XTRIM``,
    ``XDEL`` and data loss (``FLUSHDB``, as a restart without persistence), interleaved with
    resumes from any id issued so far: a resume whose every later event Redis still holds
    replays exactly those, in order, with no ``missed``; any other starts with ``missed``,
    then replays what is retained, in order. A resume from the ``missed`` frame's id then
    replays the same, with no second ``missed`` unless an ``XDEL`` lies beyond it."""
    client = module_redis.client()
    client.flushdb()
    issued: list[tuple[str, str, int]] = []  # (id, channel, generation: FLUSHDBs before it)
    generation = 0
    for operation in operations:
        if operation[0] == "publish":
            _, channel, count = operation
            for _ in range(count):
                event_id = property_broker.publish(channel, encode_event(Event(data=channel)))
                issued.append((event_id, channel, generation))
        elif operation[0] == "trim":
            client.xtrim(STREAM_KEY, maxlen=operation[1], approximate=operation[2])
        elif operation[0] == "delete":
            entries = client.xrange(STREAM_KEY)
            if entries:
                client.xdel(STREAM_KEY, entries[operation[1] % len(entries)][0])
        elif operation[0] == "flush":
            client.flushdb()
            generation += 1
        elif issued:
            _, index, channels = operation  # index -1: the latest id
            index = index % len(issued) if index >= 0 else len(issued) - 1
            check_resume(client, property_broker, issued, index, list(channels), generation)


def check_resume(
    client: t.Any,
    broker: RedisBroker,
    issued: list[tuple[str, str, int]],
    index: int,
    channels: list[str],
    generation: int,
) -> None:
    """Resume from ``issued[index]`` and check the replay against what Redis retains."""
    retained = [
        (f"{fields[b'e'].decode()}-{stream_id.decode()}", fields[b"c"].decode())
        for stream_id, fields in client.xrange(STREAM_KEY)
    ]
    held = {event_id for event_id, _ in retained}
    last_event_id, _, born = issued[index]
    later = issued[index + 1 :]
    subscription = broker.subscribe(channels, last_event_id, queue_size=10)
    events = decoded(subscription.replay)
    subscription.close()
    if born == generation and all(event_id in held for event_id, _, _ in later):
        assert not subscription.missed, f"missed after {last_event_id}, though all after it is held"
        assert [e.id for e in events] == [event_id for event_id, on, _ in later if on in channels]
        return
    assert subscription.missed and events[0].event == "missed", f"silent loss after {last_event_id}"
    missed, *rest = events
    assert json.loads(missed.data) == {
        "last_event_id": last_event_id,
        "oldest_retained": retained[0][0] if retained else None,
    }
    assert [e.id for e in rest] == [event_id for event_id, on in retained if on in channels]
    # Redis records only the greatest id deleted by XDEL: a resume from before it cannot be
    # vouched for, the missed frame's id included (never silent, at worst a second missed).
    deleted = client.xinfo_stream(STREAM_KEY)["max-deleted-entry-id"] if retained else b"0-0"
    again = broker.subscribe(channels, missed.id, queue_size=10)
    again.close()
    assert again.missed == (_position(deleted.decode()) > _position(missed.id))
    if not again.missed:
        assert [e.id for e in decoded(again.replay)] == [e.id for e in rest]


def _position(event_id: str) -> tuple[int, int]:
    """The stream position an id names (``<epoch>-<ms>-<seq>`` or ``<ms>-<seq>``)."""
    milliseconds, sequence = event_id.split("-")[-2:]
    return int(milliseconds), int(sequence)


# --- start-up and recovery, as logged ------------------------------------------------------


def test_broker_warns_at_start_up_when_redis_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Made while Redis is down, the broker starts and says so at WARNING, naming the URL."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.INFO, logger="sse_flask"):
        broker = RedisBroker(url, history=10)
    broker.close()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"cannot reach Redis at {url}" in message and "starting anyway" in message


def test_server_starts_before_redis_warns_then_logs_the_recovery_at_info(
    serve: t.Callable[..., Server],
    redis_server: RedisServer,
    stream: t.Callable[..., StreamClient],
    tmp_path: t.Any,
) -> None:
    """A server started before Redis boots, with a warning at start-up; once Redis is up it
    serves. A reader that lost Redis logs the loss at WARNING and the recovery at INFO."""
    redis_server.stop()
    log = tmp_path / "gunicorn-0.log"

    def start_redis_once_warned() -> None:
        wait_until(lambda: log.exists() and "starting anyway" in log.read_text(), 30, "the warning")
        redis_server.start()

    starter = threading.Thread(target=start_redis_once_warned)
    starter.start()
    server = serve(broker=redis_server.url, env={"SSE_HEARTBEAT": "0.3"})
    starter.join()
    warning = rf"cannot reach Redis at {re.escape(redis_server.url)}: .*; starting anyway"
    assert re.search(warning, server.log())
    client = stream(server.url)
    server.say("before")
    assert [e.data for e in client.take(1)] == ["before"]
    redis_server.stop()
    wait_until(lambda: re.search(r"\[WARNING\] lost Redis at ", server.log()), 20, "the loss")
    redis_server.start()
    wait_until(lambda: re.search(r"\[INFO\] reconnected to Redis ", server.log()), 20, "recovery")
    assert "[WARNING] reconnected" not in server.log()
    server.say("after")
    assert [e.data for e in client.take(1)] == ["after"]


def test_a_redis_that_goes_silent_without_closing_is_given_up_and_replaced(
    serve: t.Callable[..., Server], redis_server: RedisServer, stream: t.Callable[..., StreamClient]
) -> None:
    """Every connection to Redis goes dead without closing (a dropped NAT entry): the reader
    gives up within its 6 s socket timeout and reconnects, a publish on a dead connection
    answers 503 within 5 s and the next one goes through, and the open stream gets it."""
    proxy = Proxy(redis_server.port)
    try:
        server = serve(broker=f"redis://127.0.0.1:{proxy.port}/0", env={"SSE_HEARTBEAT": "0.3"})
        client = stream(server.url)
        server.say("before")
        assert [e.data for e in client.take(1)] == ["before"]
        assert proxy.blackhole() >= 2, "the reader and a publishing connection"
        silenced = time.monotonic()
        during = say_until_answered(server, "during")
        [event] = client.take(1)
        assert (event.data, event.id) == ("during", during)
        elapsed = time.monotonic() - silenced
        assert elapsed < 6 + 5, f"the dead connections were given up after {elapsed:.1f} s"
        assert re.search(r"\[WARNING\] lost Redis at .*(Timeout|timed out)", server.log())
    finally:
        proxy.close()


def test_reader_follows_a_stream_that_restarts_below_what_it_read(
    redis_server: RedisServer,
) -> None:
    """The reader read an entry far ahead (a primary whose clock ran ahead); Redis then
    restarts empty and new entries get lower ids. The reader follows on from the new
    stream's end instead of waiting for ids beyond what it read: the subscription gets them."""
    broker = RedisBroker(redis_server.url, history=100)
    try:
        subscription = broker.subscribe(["a"], None, queue_size=10)
        ahead = encode_event(Event(data="from a clock ahead"))
        redis_server.client().xadd(
            STREAM_KEY, {"c": "a", "e": "ahead", "f": ahead}, id="99999999999999-0"
        )
        wait_until(
            lambda: b"from a clock ahead" in subscription.wait(0.2), 10, "the entry far ahead"
        )
        redis_server.stop()
        redis_server.start()

        def publish() -> str | None:
            with contextlib.suppress(BrokerUnavailable):
                return broker.publish("a", encode_event(Event(data="after the restart")))
            return None

        event_id = wait_until(publish, 10, "a publish after the restart")
        received = wait_until(lambda: subscription.wait(0.2), 15, "the entry after the restart")
        assert f"id: {event_id}\n".encode() in received and b"after the restart" in received
    finally:
        broker.close()


def test_redis_restart_with_its_data_says_missed_once_then_resumes(
    serve: t.Callable[..., Server], tmp_path: Path, stream: t.Callable[..., StreamClient]
) -> None:
    """A Redis restarted with its data (append-only file, every write synced): a resume from
    before the restart is told ``missed`` (the restarted Redis may have lost its last
    acknowledged writes, so nothing after an old id is vouched for), then gets everything
    Redis kept, then live events; a later resume from what it was replayed is exact, with no
    second ``missed``."""
    need("redis-server", shutil.which("redis-server"))
    redis_server = RedisServer(tmp_path, persistent=True)
    redis_server.start()
    try:
        server = serve(broker=redis_server.url)
        before = [server.say(f"kept {n}") for n in range(3)]
        redis_server.stop()
        redis_server.start()
        wait_until(lambda: server.get("/healthz").status_code == 200, 20, "/healthz to recover")

        with stream(server.url, last_event_id=before[1]) as resumed:
            missed, *replayed = resumed.take(4)
            assert missed.event == "missed", missed
            assert json.loads(missed.data)["last_event_id"] == before[1]
            assert [e.data for e in replayed] == ["kept 0", "kept 1", "kept 2"]
            live = server.say("live")
            assert [(e.id, e.data) for e in resumed.take(1)] == [(live, "live")]
        with stream(server.url, last_event_id=replayed[-1].id) as again:
            assert [(e.event, e.data) for e in again.take(1)] == [("message", "live")]
    finally:
        redis_server.stop()
