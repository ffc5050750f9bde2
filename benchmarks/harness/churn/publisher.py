"""The publisher: sequence numbers at a steady rate over ``/say``, each retried until
accepted, with the time its accepted attempt was sent."""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time

#: The channels published over, ``churn-0`` to ``churn-3``.
CHANNELS = 4


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
        #: Sequence numbers of which an attempt was answered "nothing was sent": if such an
        #: event arrives under two ids, the server's answer was wrong. (An attempt with no
        #: answer, a worker killed mid-request, may have been accepted: a retry of it is not.)
        self.refused: set[int] = set()
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
                    self._connection = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=10
                    )
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
            if "nothing was sent" in body_text:
                self.refused.add(sequence)
            if len(self.errors) < 5:
                self.errors.append(f"{response.status} {body_text[:200]}")
            self._stopping.wait(0.05)
