"""The in-process broker: history and ids in this process's memory.

Ids are ``<epoch>-<sequence>``. The epoch is drawn afresh each time a broker starts, so an
id handed out by an earlier process (a restarted worker, or another worker behind the same
address) is recognised as unknown, and the client is told with ``event: missed`` instead of
being silently resumed from the wrong place.
"""

from __future__ import annotations

import collections
import itertools
import secrets
import time
import typing as t

from ..errors import BrokerUnavailable
from ..events import Event, encode_event, prefix_id
from ..metrics import metrics
from .fanout import Fanout, Subscription

__all__ = ["MemoryBroker"]


class MemoryBroker:
    """Publish and subscribe within one process, keeping the last ``history`` events."""

    name = "memory"

    def __init__(self, *, history: int) -> None:
        self.published = 0
        self._epoch = secrets.token_hex(4)
        self._sequence = 0
        # With history=0 the deque keeps nothing: every resume is told it missed events.
        self._history: collections.deque[tuple[int, str, bytes]] = collections.deque(maxlen=history)
        self._fanout = Fanout()
        self._stopped = False

    def publish(self, channel: str, frame: bytes) -> str:
        """Give ``frame`` (encoded without an id) the next id and deliver it on ``channel``.

        :raises BrokerUnavailable: once stopped (the worker is stopping): its history goes
            with it, and its streams are about to end, so the event would reach no one
            who resumes elsewhere.
        """
        with self._fanout.lock:
            if self._stopped:
                raise BrokerUnavailable("this worker is shutting down; publish again to reach the one replacing it")
            started = time.perf_counter()
            self._sequence += 1
            event_id = f"{self._epoch}-{self._sequence}"
            framed = prefix_id(frame, event_id)
            self._history.append((self._sequence, channel, framed))
            self._fanout.deliver(channel, framed)
            self.published += 1
        metrics().fanout_seconds.observe(time.perf_counter() - started)
        return event_id

    def subscribe(self, channels: t.Sequence[str], last_event_id: str | None, *, queue_size: int) -> Subscription:
        """Subscribe to ``channels``, replaying what followed ``last_event_id``.

        Reading the history and registering happen under one lock, so that every event is
        either in the replay or delivered live, never both and never neither.
        """
        with self._fanout.lock:
            subscription = self._fanout.new(channels, queue_size)
            # A subscription born closed (the worker is stopping) replays nothing: its
            # client keeps its id and resumes where it reconnects.
            if last_event_id is not None and subscription.closed is None:
                self._replay(subscription, last_event_id)
        return subscription

    def stats(self) -> dict[str, t.Any]:
        return self._fanout.stats(backend=self.name, published=self.published)

    def ping(self) -> None:
        """Always reachable."""

    def stop_publishing(self) -> None:
        with self._fanout.lock:
            self._stopped = True

    def close(self) -> None:
        self.stop_publishing()
        self._fanout.close_all()

    def _replay(self, subscription: Subscription, last_event_id: str) -> None:
        oldest = self._history[0][0] if self._history else self._sequence + 1
        after = self._known_sequence(last_event_id)
        frames = []
        if after is None or after + 1 < oldest:
            after = oldest - 1
            frames.append(self._missed(last_event_id, oldest))
            subscription.missed = True
        channels = set(subscription.channels)
        unseen = itertools.islice(self._history, max(0, after + 1 - oldest), None)
        frames.extend(frame for _, channel, frame in unseen if channel in channels)
        subscription.replay = frames

    def _known_sequence(self, last_event_id: str) -> int | None:
        epoch, _, sequence = last_event_id.partition("-")
        # Longer than any sequence this broker issues (and int() refuses 4,300 digits).
        if epoch != self._epoch or not sequence.isdigit() or not sequence.isascii() or len(sequence) > 20:
            return None
        number = int(sequence)
        return number if number <= self._sequence else None

    def _missed(self, last_event_id: str, oldest: int) -> bytes:
        """The ``missed`` frame; its id is the position just before the oldest retained event,
        so that a client cut off right after it resumes with the full replay."""
        oldest_retained = f"{self._epoch}-{oldest}" if self._history else None
        data = {"last_event_id": last_event_id, "oldest_retained": oldest_retained}
        return encode_event(Event(data=data, event="missed", id=f"{self._epoch}-{oldest - 1}"))
