"""Churn without loss: many clients dropping and resuming with Last-Event-ID while events are
published at a steady rate, through a graceful reload, a SIGKILLed worker and a Redis restart.

    python benchmarks/churn.py                                  # 1,000 clients, 60 s per broker
    python benchmarks/churn.py --clients 100 --seconds 15 --json
    python benchmarks/churn.py --seconds 0 --soak-seconds 3600  # only the idle soak, an hour

A run-by-hand benchmark, not a test (tests/test_churn.py runs a small one). It starts everything
it needs (``sse-flask serve`` on a free port, ``redis-server`` on another) and stops it all at the
end, on an error, on Ctrl-C and when ``--timeout`` runs out.

What happens, per broker:

- ``memory``: the in-process broker, one gevent worker; at 40 % of the run the server is
  reloaded gracefully (SIGHUP: a new worker, with a new history, takes over). A SIGKILL would be
  the same for clients: in-process history dies with its worker, by design.
- ``redis``: ``--workers`` gevent workers (4) sharing one Redis; at 30 % one worker is
  SIGKILLed, at 60 % redis-server is killed and started again, empty, ``--outage`` seconds later;
  during the outage another worker is SIGKILLed, so that its replacement starts without Redis.
- ``sentinel`` (only when asked for): ``--workers`` workers on a primary and a replica behind
  three Sentinels, with ``SSE_REDIS_WAIT_REPLICAS=1``; at 40 % the primary is SIGKILLed, the
  Sentinels promote the replica, and the old primary comes back empty as its replica (until
  then publishes answer 503: no replica confirms them).

The clients (``--clients``, spread over a few processes, raw sockets and a selector) each listen
to one or two of four channels. Each drops its connection at random (every ``--drop-every``
seconds on average; half of them stay away up to ``--away`` seconds, some reset the connection
instead of closing it) and reconnects with the id of the last event it received (a
``Last-Event-ID`` header, or the ``lastEventId`` parameter for one client in five). One thread
publishes ``--rate`` events a second, the data of each its sequence number, round-robin over the
channels, retrying a publish that failed (503, connection lost) until it is accepted. After
``--seconds`` the clients stop dropping and the publisher goes on until every client has an
event published after the run on each of its channels (at most ``--drain`` seconds).

How deliveries are counted, per client:

- expected: every event of the run on the client's channels whose accepted publish was *sent*
  after the client's stream opened with no id to resume from (its first: a client does not
  drop before it has an id);
- duplicated: an event id received twice. Shown apart, those resent in the replay that follows
  a missed notice (the resume id was unknown where the client reconnected). A sequence number
  received under two ids is "republished" instead when its publish was sent more than once (an
  attempt that got no answer, or an error, may still have been accepted);
- out of order: a sequence number, first received, lower than one received before it;
- lost: expected and never received, and not announced: an ``event: missed`` notice (the
  contract's answer to a resume id the broker cannot continue from: a restarted in-process
  worker, a Redis that lost its data) announces the gap between the last event received before
  it and the first received after it; the events in that gap are "announced gaps", not losses.

Also counted: connects, drops by the clients, streams the server closed (a reload, a killed
worker), connections refused (503 while Redis is away, or closed before an answer), tracebacks
in the server's log, and the server's peak RSS (master and workers, from /proc).

Exits 1 if any broker lost, duplicated or reordered a delivery, or a client never connected.

The idle soak (``--soak-seconds``, 15 by default; 3600 for the hour the README reports) opens
``--soak-streams`` streams on a fresh server, publishes nothing, and samples the server's RSS
every ``--soak-interval`` seconds: what each idle stream costs, and whether that stays flat.
``--log-dir`` keeps the servers' logs.
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import heapq
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

from harness import procs

REPO = Path(__file__).resolve().parent.parent
CHANNELS = 4


class Timeout(Exception):
    """The run went past --timeout."""


# ---------------------------------------------------------------------------------------------
# What we start: sse-flask serve, redis-server
# ---------------------------------------------------------------------------------------------


def start_server(kind: str, options: argparse.Namespace, workdir: Path, cleanup: contextlib.ExitStack, name: str) -> tuple[procs.Gunicorn, procs.Redis | procs.Sentinels | None]:
    """``sse-flask serve`` with the ``kind`` of broker: one worker with the in-process broker,
    ``--workers`` sharing a fresh ``redis-server`` with Redis, or a primary and a replica behind
    three Sentinels with ``sentinel`` (each publish waiting for the replica:
    ``SSE_REDIS_WAIT_REPLICAS=1``); ``cleanup`` stops them."""
    redis: procs.Redis | procs.Sentinels | None = None
    if kind != "memory" and not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (apt-get install redis-server); use --broker memory")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
    if kind == "redis":
        redis = procs.Redis(workdir / f"redis-{name}.log")
        redis.start()
        cleanup.callback(redis.stop)
    elif kind == "sentinel":
        directory = workdir / f"sentinel-{name}"
        directory.mkdir(exist_ok=True)
        redis = procs.Sentinels(directory)
        cleanup.callback(redis.stop)
        environ["SSE_REDIS_WAIT_REPLICAS"] = "1"
    workers = 1 if kind == "memory" else options.workers
    argv = [sys.executable, "-m", "sse_flask", "serve", "--bind", "127.0.0.1:0", "--workers", str(workers)]
    if redis is not None:
        argv += ["--broker", redis.url]
    server = procs.Gunicorn(
        "sse-flask", argv, workers=workers, log=workdir / f"gunicorn-{name}.log", env={**environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO
    )
    cleanup.callback(server.stop)
    return server, redis


def tracebacks(log: str) -> dict[str, int]:
    """The tracebacks in a server's log, counted by their last line (the exception)."""
    found: collections.Counter[str] = collections.Counter()
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            ending = next((later for later in lines[number + 1 :] if later and not later.startswith(" ")), "?")
            found[ending[:200]] += 1
    return dict(found)


class Sampler(threading.Thread):
    """Samples a server's RSS every ``interval`` seconds, keeping the peak."""

    def __init__(self, server: procs.Gunicorn, interval: float = 0.25) -> None:
        super().__init__(name="rss sampler", daemon=True)
        self.server = server
        self.interval = interval
        self.peak = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.peak = max(self.peak, self.server.rss())

    def stop(self) -> int:
        self._stopping.set()
        self.join(5)
        return self.peak


# ---------------------------------------------------------------------------------------------
# The publisher
# ---------------------------------------------------------------------------------------------


class Publisher(threading.Thread):
    """Publishes sequence numbers at a steady rate, round-robin over the channels, each retried
    until accepted. Records, for each accepted one, when its accepted attempt was sent."""

    def __init__(self, port: int, rate: float) -> None:
        super().__init__(name="publisher", daemon=True)
        self.port = port
        self.rate = rate
        self.sent_at: dict[int, float] = {}
        self.attempts: collections.Counter[int] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        #: The first few error answers, as they came.
        self.errors: list[str] = []
        #: The last sequence number of the run proper; later ones only drain.
        self.last_of_run: int | None = None
        self.run_over = threading.Event()
        self.window_closed = threading.Event()
        self._stopping = threading.Event()
        self._connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        sequence = 0
        next_at = time.monotonic()
        while not self._stopping.is_set():
            if self.run_over.is_set() and self.last_of_run is None:
                self.last_of_run = sequence - 1
                self.window_closed.set()
            delay = next_at - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
                break
            self._publish(sequence)
            sequence += 1
            next_at = max(next_at + 1 / self.rate, time.monotonic())
        if self._connection is not None:
            self._connection.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(15)

    def _publish(self, sequence: int) -> None:
        body = json.dumps({"data": str(sequence), "channel": f"churn-{sequence % CHANNELS}"})
        while not self._stopping.is_set():
            self.attempts[sequence] += 1
            sent = time.monotonic()
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self._connection.request("POST", "/say", body, {"Content-Type": "application/json"})
                response = self._connection.getresponse()
                body_text = response.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                self.failures["connection"] += 1
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                self._stopping.wait(0.05)
                continue
            if response.status == 200:
                self.sent_at[sequence] = sent
                return
            self.failures[str(response.status)] += 1
            if len(self.errors) < 5:
                self.errors.append(f"{response.status} {body_text[:200]}")
            self._stopping.wait(0.05)


# ---------------------------------------------------------------------------------------------
# The clients: many per process, raw sockets and a selector
# ---------------------------------------------------------------------------------------------

IDLE, CONNECTING, HEAD, STREAM = range(4)


class Client:
    __slots__ = (
        "index", "channels", "use_param", "sock", "state", "buffer", "last_id", "since",
        "sequences", "ids", "missed", "connects", "drops", "refused", "closed_by_server", "generation",
        "newest",
    )

    def __init__(self, index: int, channels: tuple[int, ...], use_param: bool) -> None:
        self.index = index
        self.channels = channels
        self.use_param = use_param
        self.sock: socket.socket | None = None
        self.state = IDLE
        self.buffer = b""
        self.last_id: bytes | None = None
        self.since: float | None = None
        self.sequences = array.array("q")
        self.ids = array.array("l")
        #: Positions in ``sequences`` where an ``event: missed`` notice arrived.
        self.missed: list[int] = []
        self.connects = 0
        self.drops = 0
        self.refused = 0
        self.closed_by_server = 0
        self.generation = 0
        #: The highest sequence number received on each channel.
        self.newest = dict.fromkeys(channels, -1)


class Crowd:
    """The clients of one process."""

    def __init__(self, port: int, specs: list[tuple[int, tuple[int, ...], bool]], *, drop_every: float, away: float, seed: int) -> None:
        self.address = ("127.0.0.1", port)
        self.clients = [Client(*spec) for spec in specs]
        self.drop_every = drop_every
        self.away = away
        self.random = random.Random(seed)
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, int, int, str]] = []
        self.counter = 0
        self.churning = True
        self.last_of_run: int | None = None
        self.id_numbers: dict[bytes, int] = {}

    # -- scheduling ------------------------------------------------------------------------

    def later(self, delay: float, client: Client, action: str) -> None:
        self.counter += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.counter, client.index, client.generation, action))

    def run_timers(self) -> float:
        """Run what is due; return the seconds until the next timer."""
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, index, generation, action = heapq.heappop(self.timers)
            client = self.clients[index - self.clients[0].index]
            if client.generation != generation:
                continue  # stale: the client changed state since
            if action == "connect":
                self.connect(client)
            elif action == "drop" and self.churning:
                self.drop(client)
        return self.timers[0][0] - now if self.timers else 0.1

    # -- a client's life -------------------------------------------------------------------

    def connect(self, client: Client) -> None:
        client.generation += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        error = sock.connect_ex(self.address)
        if error not in (0, 115):  # 115: EINPROGRESS
            sock.close()
            client.refused += 1
            self.later(self.random.uniform(0.05, 0.3), client, "connect")
            return
        client.sock, client.state, client.buffer = sock, CONNECTING, b""
        self.selector.register(sock, selectors.EVENT_WRITE, client)

    def on_writable(self, client: Client) -> None:
        sock = t.cast(socket.socket, client.sock)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            client.refused += 1
            self.close(client, 0.1)
            return
        query = "&".join(f"channel=churn-{channel}" for channel in client.channels)
        headers = "Host: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        if client.last_id is not None:
            if client.use_param:
                query += "&lastEventId=" + client.last_id.decode()
            else:
                headers += f"Last-Event-ID: {client.last_id.decode()}\r\n"
        # HTTP/1.0: the body is the bare event stream, no chunked framing to undo.
        request = f"GET /events?{query} HTTP/1.0\r\n{headers}\r\n".encode()
        try:
            sock.send(request)
        except OSError:
            client.refused += 1
            self.close(client, 0.1)
            return
        client.state = HEAD
        self.selector.modify(sock, selectors.EVENT_READ, client)

    def on_readable(self, client: Client) -> None:
        sock = t.cast(socket.socket, client.sock)
        try:
            data = sock.recv(262144)
        except OSError:
            data = b""
        if not data:
            if client.state == STREAM:
                client.closed_by_server += 1
            else:
                client.refused += 1
            self.close(client, self.random.uniform(0.02, 0.2))
            return
        if client.state == HEAD:
            data = client.buffer + data
            head, separator, rest = data.partition(b"\r\n\r\n")
            if not separator:
                client.buffer = data
                return
            if head[9:12] != b"200":
                client.refused += 1  # 503: the broker is away, or the worker is full
                self.close(client, self.random.uniform(0.1, 0.4))
                return
            client.state, client.buffer = STREAM, b""
            client.connects += 1
            if client.last_id is None:
                # Opened with no id to resume from: from now on, it must get every event.
                client.since = time.monotonic()
            else:
                self.schedule_drop(client)
            data = rest
            if not data:
                return
        self.feed(client, data)

    def feed(self, client: Client, data: bytes) -> None:
        buffer = client.buffer + data
        if b"\n\n" not in buffer:
            client.buffer = buffer
            return
        *frames, client.buffer = buffer.split(b"\n\n")
        for frame in frames:
            event_id = event = data_line = None
            for line in frame.split(b"\n"):
                if line.startswith(b"data: "):
                    data_line = line[6:]
                elif line.startswith(b"id: "):
                    event_id = line[4:]
                elif line.startswith(b"event: "):
                    event = line[7:]
            if event_id is not None:
                if client.last_id is None:
                    self.schedule_drop(client)  # not before: with no id, a client cannot resume
                client.last_id = event_id
            if event == b"missed":
                client.missed.append(len(client.sequences))
            elif data_line is not None and event_id is not None:
                sequence = int(data_line)
                client.sequences.append(sequence)
                client.ids.append(self.id_numbers.setdefault(event_id, len(self.id_numbers)))
                channel = sequence % CHANNELS
                if sequence > client.newest.get(channel, sequence):
                    client.newest[channel] = sequence

    def schedule_drop(self, client: Client) -> None:
        if self.churning:
            self.later(self.random.expovariate(1 / self.drop_every), client, "drop")

    def drop(self, client: Client) -> None:
        if client.state != STREAM:
            return
        client.drops += 1
        if self.random.random() < 0.3:
            # A reset rather than a close: the way a vanished client's connection ends.
            t.cast(socket.socket, client.sock).setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        away = 0.0 if self.random.random() < 0.5 else self.random.uniform(0, self.away)
        self.close(client, away)

    def close(self, client: Client, reconnect_after: float) -> None:
        if client.sock is not None:
            self.selector.unregister(client.sock)
            client.sock.close()
        client.sock, client.state, client.buffer = None, IDLE, b""
        client.generation += 1
        self.later(reconnect_after, client, "connect")

    # -- the process's loop ----------------------------------------------------------------

    def streaming(self) -> int:
        return sum(1 for client in self.clients if client.state == STREAM)

    def caught_up(self) -> int:
        if self.last_of_run is None:
            return 0
        last = self.last_of_run
        return sum(
            1 for client in self.clients
            if client.state == STREAM and all(newest > last for newest in client.newest.values())
        )

    def serve(self, control: multiprocessing.connection.Connection) -> None:
        for client in self.clients:
            self.later(self.random.uniform(0, 1.0), client, "connect")
        next_report = 0.0
        while True:
            timeout = min(max(self.run_timers(), 0.0), 0.05)
            for key, mask in self.selector.select(timeout):
                client = key.data
                if mask & selectors.EVENT_WRITE and client.state == CONNECTING:
                    self.on_writable(client)
                elif mask & selectors.EVENT_READ:
                    self.on_readable(client)
            now = time.monotonic()
            if now >= next_report:
                control.send(("status", self.streaming(), self.caught_up()))
                next_report = now + 0.25
            while control.poll():
                message = control.recv()
                if message[0] == "drain":
                    self.churning, self.last_of_run = False, message[1]
                elif message[0] == "finish":
                    _, sent_at, attempts, last_of_run = message
                    for client in self.clients:
                        if client.sock is not None:
                            self.selector.unregister(client.sock)
                            client.sock.close()
                    control.send(("result", analyse(self.clients, sent_at, attempts, last_of_run)))
                    return


def client_process(control: multiprocessing.connection.Connection, port: int, specs: list[tuple[int, tuple[int, ...], bool]], drop_every: float, away: float, seed: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, and stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    Crowd(port, specs, drop_every=drop_every, away=away, seed=seed).serve(control)


# ---------------------------------------------------------------------------------------------
# What the clients received, against what was published
# ---------------------------------------------------------------------------------------------

COUNTERS = ("expected", "received", "lost", "duplicated", "duplicated_after_missed", "out_of_order", "republished", "missed_notices",
            "announced_gaps", "unacknowledged", "wrong_channel", "connects", "drops", "refused", "closed_by_server", "never_connected")


def analyse(clients: list[Client], sent_at: dict[int, float], attempts: dict[int, int], last_of_run: int) -> dict[str, t.Any]:
    totals: collections.Counter[str] = collections.Counter({name: 0 for name in COUNTERS})
    examples: list[str] = []
    noted: collections.Counter[int] = collections.Counter()  # examples per client

    def note(client: Client, text: str) -> None:
        examples.append(text)
        noted[client.index] += 1

    republished_events: set[int] = set()
    by_channel: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    for sequence, sent in sent_at.items():
        if sequence <= last_of_run:
            by_channel[sequence % CHANNELS].append((sent, sequence))
    for client in clients:
        totals["connects"] += client.connects
        totals["drops"] += client.drops
        totals["refused"] += client.refused
        totals["closed_by_server"] += client.closed_by_server
        totals["missed_notices"] += len(client.missed)
        if client.since is None:
            totals["never_connected"] += 1
            examples.append(f"client {client.index} never had a stream open")
            continue
        expected = {sequence for channel in client.channels for sent, sequence in by_channel[channel] if sent > client.since}
        seen_ids: set[int] = set()
        first_position: dict[int, int] = {}  # id number -> position of its first arrival
        first_seen: dict[int, int] = {}  # sequence -> position of its first arrival
        highest = -1
        order: list[int] = []  # sequence numbers in order of first arrival, for the gaps
        positions: list[int] = []
        for position, (sequence, number) in enumerate(zip(client.sequences, client.ids, strict=True)):
            if number in seen_ids:
                totals["duplicated"] += 1
                if any(first_position[number] < notice <= position for notice in client.missed):
                    # Resent in the replay that follows a missed notice, the client's resume
                    # id unknown to the broker it reached.
                    totals["duplicated_after_missed"] += 1
                if len(examples) < 20 and noted[client.index] < 3:
                    note(client, f"client {client.index}: event {sequence} (the same id) twice")
                continue
            seen_ids.add(number)
            first_position[number] = position
            if sequence in first_seen:
                if attempts.get(sequence, 0) > 1:
                    totals["republished"] += 1
                    republished_events.add(sequence)
                else:
                    totals["duplicated"] += 1
                    if len(examples) < 20 and noted[client.index] < 3:
                        note(client, f"client {client.index}: event {sequence} twice, under two ids, published once")
                continue
            first_seen[sequence] = position
            order.append(sequence)
            positions.append(position)
            if sequence < highest:
                totals["out_of_order"] += 1
                if len(examples) < 20 and noted[client.index] < 3:
                    note(client, f"client {client.index}: event {sequence} after {highest}")
            highest = max(highest, sequence)
            if sequence % CHANNELS not in client.channels:
                totals["wrong_channel"] += 1
                if len(examples) < 20 and noted[client.index] < 3:
                    note(client, f"client {client.index} (channels {client.channels}): event {sequence} of another channel")
            if sequence <= last_of_run and sequence not in sent_at:
                totals["unacknowledged"] += 1
        missing = expected - first_seen.keys()
        if missing and client.missed:
            announced = set()
            for notice in client.missed:
                # The gap a notice announces: after the last event received before it, up to
                # the first received after it.
                before = max((s for s, p in zip(order, positions, strict=True) if p < notice), default=-1)
                after = min((s for s, p in zip(order, positions, strict=True) if p >= notice), default=float("inf"))
                announced |= {s for s in missing if before < s < after}
            totals["announced_gaps"] += len(announced)
            missing -= announced
        totals["expected"] += len(expected)
        totals["received"] += len(expected & first_seen.keys())
        totals["lost"] += len(missing)
        if missing and len(examples) < 20 and noted[client.index] < 3:
            examples.append(f"client {client.index} (channels {client.channels}): lost {sorted(missing)[:10]}{' ...' if len(missing) > 10 else ''}")
    return {"totals": dict(totals), "examples": examples, "republished": sorted(republished_events)}


# ---------------------------------------------------------------------------------------------
# One broker's run
# ---------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[churn {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def client_specs(count: int, rng: random.Random) -> list[tuple[int, tuple[int, ...], bool]]:
    specs = []
    for index in range(count):
        channels = tuple(sorted(rng.sample(range(CHANNELS), rng.choice((1, 2)))))
        specs.append((index, channels, rng.random() < 0.2))
    return specs


def run_broker(kind: str, options: argparse.Namespace, workdir: Path, deadline: float) -> dict[str, t.Any]:
    started = time.monotonic()
    rng = random.Random(options.seed)
    faults: list[str] = []
    with contextlib.ExitStack() as cleanup:
        server, redis = start_server(kind, options, workdir, cleanup, kind)
        workers = server.workers
        log(f"{kind}: {workers} worker(s) on port {server.port}; {options.clients} clients")

        specs = client_specs(options.clients, rng)
        processes = options.processes or max(1, min(os.cpu_count() or 1, -(-options.clients // 500)))
        context = multiprocessing.get_context("fork")
        crowds = []
        size = -(-len(specs) // processes)
        for number in range(processes):
            ours, theirs = context.Pipe()
            share = specs[number * size : (number + 1) * size]  # contiguous: found by index
            process = context.Process(target=client_process, args=(theirs, server.port, share, options.drop_every, options.away, options.seed + number), daemon=True)
            process.start()
            cleanup.callback(stop_process, process)
            crowds.append(CrowdHandle(process, ours))

        sampler = Sampler(server)
        sampler.start()
        cleanup.callback(sampler.stop)

        def poll(until: t.Callable[[], bool], timeout: float, what: str) -> None:
            end = min(time.monotonic() + timeout, deadline)
            while not until():
                if time.monotonic() > end:
                    if time.monotonic() > deadline:
                        raise Timeout(f"--timeout ran out waiting for {what}")
                    raise RuntimeError(f"timed out waiting for {what}")
                for crowd in crowds:
                    crowd.receive(0.02)

        def until(moment: float, what: str) -> None:
            """Keep reading the clients' reports until ``moment``."""
            poll(lambda: time.monotonic() >= moment, max(0.0, moment - time.monotonic()) + 5, what)

        poll(lambda: sum(c.streaming for c in crowds) >= options.clients, 60, f"{options.clients} streams to open")
        log(f"{kind}: all {options.clients} streams open; publishing {options.rate} events/s for {options.seconds} s")

        publisher = Publisher(server.port, options.rate)
        publisher.start()
        cleanup.callback(publisher.stop)
        run_started = time.monotonic()
        schedule = {
            "memory": [(0.4, "reload")], "redis": [(0.3, "kill"), (0.6, "redis-stop")], "sentinel": [(0.4, "failover")],
        }[kind]
        for fraction, fault in schedule:
            until(run_started + fraction * options.seconds, "the next fault")
            if fault == "reload":
                server.reload()
                faults.append(f"graceful reload (SIGHUP) at {time.monotonic() - run_started:.1f} s")
            elif fault == "kill":
                victim = server.kill_worker()
                faults.append(f"worker {victim} SIGKILLed at {time.monotonic() - run_started:.1f} s")
            elif fault == "failover":
                assert isinstance(redis, procs.Sentinels)
                at = time.monotonic() - run_started
                redis.fail_over()
                faults.append(
                    f"primary SIGKILLed at {at:.1f} s; the Sentinels promoted the replica, and the old primary, "
                    f"started again empty, replicated it {time.monotonic() - run_started - at:.1f} s later"
                )
            elif fault == "redis-stop":
                assert isinstance(redis, procs.Redis)
                at = time.monotonic() - run_started
                redis.kill()
                # A worker that starts while Redis is away (a crash, a max-requests restart)
                # must still deliver once Redis is back.
                victim = server.kill_worker()
                until(run_started + at + options.outage, "the end of the Redis outage")
                redis.start()
                faults.append(
                    f"redis-server killed at {at:.1f} s, started again (empty) {options.outage:g} s later; "
                    f"meanwhile worker {victim} SIGKILLed, its replacement started without Redis"
                )
            log(f"{kind}: {faults[-1]}")
        until(run_started + options.seconds, "the end of the run")

        publisher.run_over.set()
        poll(publisher.window_closed.is_set, 30, "the last publish of the run to be accepted")
        last_of_run = t.cast(int, publisher.last_of_run)
        run_seconds = time.monotonic() - run_started
        for crowd in crowds:
            crowd.control.send(("drain", last_of_run))
        log(f"{kind}: run over after {run_seconds:.1f} s ({last_of_run + 1} events); draining")
        drain_started = time.monotonic()
        try:
            poll(lambda: all(c.caught_up_reported for c in crowds) and sum(c.caught_up for c in crowds) >= options.clients, options.drain, "every client to catch up")
        except RuntimeError as e:
            log(f"{kind}: {e}; counting what arrived")
        drain_seconds = time.monotonic() - drain_started
        publisher.stop()
        peak = sampler.stop()

        sent_at = {sequence: sent for sequence, sent in publisher.sent_at.items() if sequence <= last_of_run}
        attempts = dict(publisher.attempts)
        for crowd in crowds:
            crowd.control.send(("finish", sent_at, attempts, last_of_run))
        totals: collections.Counter[str] = collections.Counter()
        examples: list[str] = []
        republished: set[int] = set()
        for crowd in crowds:
            result = crowd.result(min(60, max(1, deadline - time.monotonic())))
            totals.update(result["totals"])
            examples += result["examples"]
            republished.update(result["republished"])
        examples += [
            f"event {sequence} arrived under two ids: its publish was sent {attempts[sequence]} times, and an attempt "
            f"answered with an error was accepted all the same" for sequence in sorted(republished)[:5]
        ]
        log_text = server.log_text()

    return {
        "broker": kind,
        "workers": workers,
        "clients": options.clients,
        "faults": faults,
        "published": len(sent_at),
        "publish_attempts_failed": dict(publisher.failures),
        "publish_errors": publisher.errors,
        **{name: totals.get(name, 0) for name in COUNTERS},
        "republished_events": len(republished),
        "peak_server_rss_mib": round(peak / 2**20, 1),
        "run_seconds": round(run_seconds, 1),
        "drain_seconds": round(drain_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "server_tracebacks": tracebacks(log_text),
        "examples": examples[:20],
    }


class CrowdHandle:
    """The parent's end of a client process."""

    def __init__(self, process: multiprocessing.process.BaseProcess, control: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.control = control
        self.streaming = 0
        self.caught_up = 0
        self.caught_up_reported = False
        self._result: dict[str, t.Any] | None = None

    def receive(self, timeout: float) -> None:
        if not self.process.is_alive() and not self.control.poll():
            raise RuntimeError(f"a client process died (exit code {self.process.exitcode})")
        if not self.control.poll(timeout):
            return
        while self.control.poll():
            message = self.control.recv()
            if message[0] == "status":
                _, self.streaming, self.caught_up = message
                self.caught_up_reported = True
            elif message[0] == "result":
                self._result = message[1]

    def result(self, timeout: float) -> dict[str, t.Any]:
        end = time.monotonic() + timeout
        while self._result is None:
            if time.monotonic() > end:
                raise RuntimeError("a client process did not report its result")
            self.receive(0.1)
        return self._result


def stop_process(process: multiprocessing.process.BaseProcess) -> None:
    process.join(1)  # it ends by itself once it has sent its result
    if process.is_alive():
        process.terminate()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


# ---------------------------------------------------------------------------------------------
# The idle soak
# ---------------------------------------------------------------------------------------------


def soak(kind: str, options: argparse.Namespace, workdir: Path, deadline: float) -> dict[str, t.Any]:
    """Open ``--soak-streams`` idle streams and sample the server's RSS for ``--soak-seconds``."""
    with contextlib.ExitStack() as cleanup:
        server, _ = start_server(kind, options, workdir, cleanup, f"soak-{kind}")
        workers = server.workers
        # A publish and a few streams per worker first, kept open, so that the baseline holds
        # what a worker loads once (its Redis reader, its ticker), not per stream.
        with contextlib.closing(http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)) as connection:
            connection.request("POST", "/say", json.dumps({"data": "warm-up"}), {"Content-Type": "application/json"})
            assert connection.getresponse().status == 200
        selector = selectors.DefaultSelector()
        cleanup.callback(selector.close)

        def open_streams(count: int) -> None:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock.sendall(b"GET /events?channel=soak HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                cleanup.callback(sock.close)

        open_streams(8 * workers)
        time.sleep(1)
        baseline = server.rss()
        count = options.soak_streams
        open_streams(count)
        opened = time.monotonic()
        samples = []
        interval = options.soak_interval or max(1.0, options.soak_seconds / 60)
        next_sample = opened + min(interval, 2.0)
        closed = 0
        while time.monotonic() < opened + options.soak_seconds:
            if time.monotonic() > deadline:
                raise Timeout("--timeout ran out during the soak")
            for key, _ in selector.select(0.2):
                data = b""
                with contextlib.suppress(OSError):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    selector.unregister(key.fileobj)
                    closed += 1
            if time.monotonic() >= next_sample:
                rss = server.rss()
                samples.append({"seconds": round(time.monotonic() - opened, 1), "rss_mib": round(rss / 2**20, 1),
                                "per_stream_kib": round((rss - baseline) / count / 1024, 2)})
                next_sample += interval
                if interval >= 10:
                    log(f"{kind} soak: {samples[-1]}")
        if not samples:
            rss = server.rss()
            samples.append({"seconds": round(time.monotonic() - opened, 1), "rss_mib": round(rss / 2**20, 1),
                            "per_stream_kib": round((rss - baseline) / count / 1024, 2)})
    first, last = samples[0]["per_stream_kib"], samples[-1]["per_stream_kib"]
    # Settled: after the first round of heartbeats (each stream's first write after the
    # retry allocates a little), from which on idle memory should not move.
    settled_at = min(60.0, options.soak_seconds / 4)
    settled = next((sample["per_stream_kib"] for sample in samples if sample["seconds"] >= settled_at), last)
    return {
        "broker": kind,
        "workers": workers,
        "streams": count,
        "seconds": options.soak_seconds,
        "baseline_rss_mib": round(baseline / 2**20, 1),
        "per_stream_kib_first": first,
        "per_stream_kib_last": last,
        "growth_percent": round(100 * (last - first) / first, 1) if first else None,
        "per_stream_kib_settled": settled,
        "settled_at_seconds": settled_at,
        "growth_since_settled_percent": round(100 * (last - settled) / settled, 1) if settled else None,
        "streams_closed_by_server": closed,
        "samples": samples,
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

ROWS = [
    ("clients", "clients"),
    ("workers", "workers"),
    ("events published (acknowledged)", "published"),
    ("deliveries expected", "expected"),
    ("received", "received"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("  of which after a missed notice", "duplicated_after_missed"),
    ("out of order", "out_of_order"),
    ("missed notices", "missed_notices"),
    ("announced gaps (events)", "announced_gaps"),
    ("republished (deliveries)", "republished"),
    ("republished (events)", "republished_events"),
    ("received, never acknowledged", "unacknowledged"),
    ("connects", "connects"),
    ("drops (by the clients)", "drops"),
    ("closed by the server", "closed_by_server"),
    ("refused (503, reset)", "refused"),
    ("peak server RSS (MiB)", "peak_server_rss_mib"),
    ("run time (s)", "run_seconds"),
    ("drain (s)", "drain_seconds"),
]


def table(results: dict[str, dict[str, t.Any]]) -> str:
    names = list(results)
    width = max(len(label) for label, _ in ROWS) + 2
    lines = ["".ljust(width) + "".join(name.rjust(12) for name in names)]
    for label, key in ROWS:
        lines.append(label.ljust(width) + "".join(str(results[name].get(key, "")).rjust(12) for name in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60, help="length of the run proper, per broker; 0 skips it (soak only)")
    parser.add_argument("--rate", type=float, default=50, help="events published per second")
    parser.add_argument("--broker", choices=["memory", "redis", "both", "sentinel"], default="both",
                        help="both: memory and redis; sentinel: a Sentinel failover, run alone")
    parser.add_argument("--workers", type=int, default=4, help="gevent workers for the Redis run")
    parser.add_argument("--drop-every", type=float, default=10, help="mean seconds between a client's drops")
    parser.add_argument("--away", type=float, default=1.5, help="longest a dropped client stays away")
    parser.add_argument("--outage", type=float, default=2, help="seconds redis-server stays down")
    parser.add_argument("--drain", type=float, default=30, help="longest wait for clients to catch up after the run")
    parser.add_argument("--processes", type=int, default=0, help="client processes (default: one per 500 clients, up to the cores)")
    parser.add_argument("--soak-seconds", type=float, default=15, help="idle-memory soak per broker; 0 skips it; 3600 for an hour")
    parser.add_argument("--soak-streams", type=int, default=0, help="idle streams in the soak (default: --clients)")
    parser.add_argument("--soak-interval", type=float, default=0, help="seconds between RSS samples in the soak (default: a 60th of it)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default: generous for the run asked)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary directory, removed)")
    options = parser.parse_args(argv)
    options.soak_streams = options.soak_streams or options.clients
    brokers = ["memory", "redis"] if options.broker == "both" else [options.broker]
    budget = options.timeout or len(brokers) * (options.seconds + options.drain + options.soak_seconds + 150)
    deadline = time.monotonic() + budget

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * (options.clients + options.soak_streams) + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    def interrupted(signum: int, frame: t.Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    results: dict[str, dict[str, t.Any]] = {}
    soaks: dict[str, dict[str, t.Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sse-churn-") as directory:
        workdir = Path(directory)
        if options.log_dir is not None:
            options.log_dir.mkdir(parents=True, exist_ok=True)
            workdir = options.log_dir
        try:
            for kind in brokers:
                if options.seconds > 0:
                    results[kind] = run_broker(kind, options, workdir, deadline)
                if options.soak_seconds > 0:
                    log(f"{kind}: idle soak, {options.soak_streams} streams for {options.soak_seconds:g} s")
                    soaks[kind] = soak(kind, options, workdir, deadline)
        except KeyboardInterrupt:
            log("interrupted; everything started is stopped")
            return 130
        except (Timeout, RuntimeError) as e:
            log(f"failed: {e}")
            for path in sorted(workdir.glob("gunicorn-*.log")):
                log(f"{path.name}, last lines:\n" + path.read_text(errors="replace")[-3000:])
            return 2
        finally:
            procs.stop_all()  # anything a cleanup cut short (a second Ctrl-C) left running

    failed = [
        kind for kind, result in results.items()
        if result["lost"] or result["duplicated"] or result["out_of_order"] or result["never_connected"] or result["wrong_channel"]
    ]
    if options.json:
        print(json.dumps({"config": vars(options), "results": results, "soak": soaks, "ok": not failed}, indent=2, default=str))
    else:
        if results:
            print(table(results))
        for kind, result in results.items():
            print(f"\n{kind}: " + "; ".join(result["faults"]))
            for ending, count in result["server_tracebacks"].items():
                print(f"  the server's log has {count} traceback(s) ending {ending!r}")
            if result["publish_attempts_failed"]:
                print(f"  publish attempts that failed, then were retried: {result['publish_attempts_failed']}")
            for example in result["examples"]:
                print(f"  {example}")
        for kind, result in soaks.items():
            print(
                f"\nidle soak, {kind}: {result['streams']} streams for {result['seconds']:g} s on {result['workers']} worker(s): "
                f"{result['per_stream_kib_first']} KiB per stream at first, {result['per_stream_kib_settled']} KiB after "
                f"{result['settled_at_seconds']:g} s, {result['per_stream_kib_last']} KiB at the end "
                f"({result['growth_since_settled_percent']} % since {result['settled_at_seconds']:g} s), baseline {result['baseline_rss_mib']} MiB"
            )
        if results:
            print(
                "\nexpected: events of the run on a client's channels, published after its first stream opened;"
                "\nlost: expected, never received, and not in a gap that an 'event: missed' notice announced"
                "\n(announced gaps: the in-process history is gone after a reload, Redis's after a restart)."
            )
            print("\nOK: nothing lost, duplicated or out of order." if not failed else f"\nFAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
