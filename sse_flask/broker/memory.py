"""The in-process broker: history and ids in this process's memory.

Ids are ``<epoch>-<sequence>``. The epoch is drawn afresh each time a broker starts, so an
id handed out by an earlier process (a restarted worker, or another worker behind the same
address) is recognised as unknown, and the client is told with ``event: missed`` instead of
being silently resumed from the wrong place.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import secrets
import time
import typing as t

from ..errors import BrokerUnavailable
from ..events import Event, encode_event, prefix_id
from ..metrics import metrics
from .fanout import End, Fanout, Subscription

__all__ = ["MemoryBroker"]

#: Replays kept for the resumes that follow, until the next event (see ``_replay``).
_REPLAYS = 16


class MemoryBroker:
    """Publish and subscribe within one process, keeping the last ``history`` events."""

    name = "memory"

    def __init__(self, *, history: int, job_retention: float = 300) -> None:
        self.published = 0
        self._job_retention = job_retention
        self._jobs: dict[str, _Job] = {}
        self._epoch = secrets.token_hex(4)
        self._sequence = 0
        # With history=0 the deque keeps nothing: every resume is told it missed events.
        self._history: collections.deque[tuple[int, str, bytes]] = collections.deque(maxlen=history)
        #: The replays read since the last event, by id and channels: the same until then.
        self._replays: dict[tuple[str, tuple[str, ...]], tuple[list[bytes], bool]] = {}
        self._fanout = Fanout()
        self._stopped = False

    def publish(self, channel: str, frame: bytes) -> str:
        """Give ``frame`` (encoded without an id) the next id and deliver it on ``channel``.

        :raises BrokerUnavailable: once stopped (the worker is stopping): its history goes
            with it, and its streams are about to end, so the event would reach no one
            who resumes elsewhere.
        """
        with self._fanout.lock:
            started = time.perf_counter()
            event_id, framed = self._next(frame)
            self._history.append((self._sequence, channel, framed))
            self._fanout.deliver(channel, framed)
        metrics().fanout_seconds.observe(time.perf_counter() - started)
        return event_id

    def open_job(self, channel: str, on_cancel: t.Callable[[], None]) -> None:
        """Keep the events of the job ``channel`` apart from the history, until
        ``job_retention`` seconds after its last; :meth:`cancel_job` calls ``on_cancel``."""
        with self._fanout.lock:
            now = time.monotonic()
            for name, job in list(self._jobs.items()):
                if self._expired(job, now):
                    del self._jobs[name]
            self._jobs[channel] = _Job(on_cancel)

    def publish_job(self, channel: str, frame: bytes, *, last: bool = False) -> str:
        """Publish ``frame`` on the job ``channel``, keeping it with the job's events; after
        the ``last`` one, the job's streams end.

        :raises BrokerUnavailable: once closed, as :meth:`publish`.
        """
        with self._fanout.lock:
            job = self._jobs[channel]
            event_id, framed = self._next(frame)
            job.frames.append((self._sequence, framed))
            self._fanout.deliver(channel, framed)
            if last:
                job.end(time.monotonic())
                self._fanout.end_channel(channel, End.JOB_ENDED)
        return event_id

    def subscribe_job(
        self, channel: str, last_event_id: str | None, *, queue_size: int
    ) -> Subscription | None:
        """Subscribe to the job ``channel`` from its first event, or after ``last_event_id``
        (all of them, after a ``missed``, if that id is not this broker's); ended at once,
        after the replay, if the job has ended. ``None`` if there is no such job here."""
        with self._fanout.lock:
            job = self._jobs.get(channel)
            if job is None or self._expired(job, time.monotonic()):
                return None
            if self._fanout.closed:
                return self._fanout.subscribe([channel], queue_size)
            after = 0 if last_event_id is None else self._known_sequence(last_event_id)
            notice = []
            if after is None:
                first = job.frames[0][0] if job.frames else self._sequence + 1
                oldest = f"{self._epoch}-{first}" if job.frames else None
                data = {"last_event_id": last_event_id, "oldest_retained": oldest}
                missed = Event(data=data, event="missed", id=f"{self._epoch}-{first - 1}")
                notice.append(encode_event(missed))
                after = 0
            replay = notice + [frame for sequence, frame in job.frames if sequence > after]
            subscription = self._fanout.subscribe(
                [channel], queue_size, replay=replay, missed=bool(notice)
            )
            if job.ended_at is not None:
                self._fanout.end_channel(channel, End.JOB_ENDED)
        return subscription

    def cancel_job(self, channel: str) -> None:
        """Cancel the job ``channel`` if it runs in this process and has not ended."""
        with self._fanout.lock:
            job = self._jobs.get(channel)
            on_cancel = job.on_cancel if job is not None else None
        if on_cancel is not None:
            on_cancel()

    def subscribe(
        self, channels: t.Sequence[str], last_event_id: str | None, *, queue_size: int
    ) -> Subscription:
        """Subscribe to ``channels``, replaying what followed ``last_event_id``.

        Reading the history and registering happen under one lock, so that every event is
        either in the replay or delivered live, never both and never neither.
        """
        with self._fanout.lock:
            # A subscription born closed (the worker is stopping) replays nothing: its
            # client keeps its id and resumes where it reconnects.
            if last_event_id is None or self._fanout.closed:
                return self._fanout.subscribe(channels, queue_size)
            replay, missed = self._replay(channels, last_event_id)
            return self._fanout.subscribe(channels, queue_size, replay=replay, missed=missed)

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

    def _expired(self, job: _Job, now: float) -> bool:
        return job.ended_at is not None and now - job.ended_at > self._job_retention

    def _next(self, frame: bytes) -> tuple[str, bytes]:
        """The next id, and ``frame`` with it. The caller holds the fan-out's lock."""
        if self._stopped:
            raise BrokerUnavailable(
                "this worker is shutting down; publish again to reach the one replacing it"
            )
        self._sequence += 1
        self.published += 1
        self._replays.clear()
        event_id = f"{self._epoch}-{self._sequence}"
        return event_id, prefix_id(frame, event_id)

    def _replay(self, channels: t.Sequence[str], last_event_id: str) -> tuple[list[bytes], bool]:
        """What follows ``last_event_id`` on ``channels``, and whether it starts with a
        ``missed`` frame; not to be changed. The caller holds the fan-out's lock.

        Until the next event it stays the same, so the streams that resume together (a
        reconnect storm, most from the last id sent) share one look through the history.
        """
        key = (last_event_id, tuple(channels))
        replay = self._replays.get(key)
        if replay is None:
            if len(self._replays) >= _REPLAYS:
                self._replays.clear()
            replay = self._replays[key] = self._read_replay(channels, last_event_id)
        return replay

    def _read_replay(
        self, channels: t.Sequence[str], last_event_id: str
    ) -> tuple[list[bytes], bool]:
        oldest = self._history[0][0] if self._history else self._sequence + 1
        after = self._known_sequence(last_event_id)
        frames = []
        if after is None or after + 1 < oldest:
            after = oldest - 1
            frames.append(self._missed(last_event_id, oldest))
        missed = bool(frames)
        wanted = set(channels)
        unseen = itertools.islice(self._history, max(0, after + 1 - oldest), None)
        frames.extend(frame for _, channel, frame in unseen if channel in wanted)
        return frames, missed

    def _known_sequence(self, last_event_id: str) -> int | None:
        epoch, _, sequence = last_event_id.partition("-")
        # Longer than any sequence this broker issues (and int() refuses 4,300 digits).
        if (
            epoch != self._epoch
            or not sequence.isdigit()
            or not sequence.isascii()
            or len(sequence) > 20
        ):
            return None
        number = int(sequence)
        return number if number <= self._sequence else None

    def _missed(self, last_event_id: str, oldest: int) -> bytes:
        """The ``missed`` frame; its id is the position just before the oldest retained event,
        so that a client cut off right after it resumes with the full replay."""
        oldest_retained = f"{self._epoch}-{oldest}" if self._history else None
        data = {"last_event_id": last_event_id, "oldest_retained": oldest_retained}
        return encode_event(Event(data=data, event="missed", id=f"{self._epoch}-{oldest - 1}"))


@dataclasses.dataclass(eq=False)
class _Job:
    """A job's events, in order, and how to cancel it while it runs."""

    on_cancel: t.Callable[[], None] | None
    frames: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    #: ``time.monotonic()`` of its last event; ``None`` while it runs.
    ended_at: float | None = None

    def end(self, now: float) -> None:
        """The job's last event went out at ``now``: it can no longer be cancelled."""
        self.ended_at = now
        self.on_cancel = None
