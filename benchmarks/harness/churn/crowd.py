"""The clients: many per process, over raw sockets and one selector, each dropping and
resuming with ``Last-Event-ID``; and the parent's handle on each client process."""

from __future__ import annotations

import array
import heapq
import multiprocessing
import multiprocessing.connection
import random
import selectors
import signal
import socket
import time
import typing as t

from .ledger import analyse
from .publisher import CHANNELS

IDLE, CONNECTING, HEAD, STREAM = range(4)


class Client:
    __slots__ = (
        "buffer",
        "channels",
        "closed_by_server",
        "connects",
        "drops",
        "generation",
        "ids",
        "index",
        "last_id",
        "missed",
        "newest",
        "refused",
        "sequences",
        "since",
        "sock",
        "state",
        "use_param",
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

    def __init__(
        self,
        port: int,
        specs: list[tuple[int, tuple[int, ...], bool]],
        *,
        drop_every: float,
        away: float,
        seed: int,
    ) -> None:
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
        heapq.heappush(
            self.timers,
            (time.monotonic() + delay, self.counter, client.index, client.generation, action),
        )

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
            t.cast(socket.socket, client.sock).setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
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
            1
            for client in self.clients
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


def client_process(
    control: multiprocessing.connection.Connection,
    port: int,
    specs: list[tuple[int, tuple[int, ...], bool]],
    drop_every: float,
    away: float,
    seed: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, and stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    Crowd(port, specs, drop_every=drop_every, away=away, seed=seed).serve(control)


def client_specs(count: int, rng: random.Random) -> list[tuple[int, tuple[int, ...], bool]]:
    specs = []
    for index in range(count):
        channels = tuple(sorted(rng.sample(range(CHANNELS), rng.choice((1, 2)))))
        specs.append((index, channels, rng.random() < 0.2))
    return specs


class CrowdHandle:
    """The parent's end of a client process."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        control: multiprocessing.connection.Connection,
    ) -> None:
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
