"""Local fan-out: the registry of this process's subscriptions, keyed by channel.

Both brokers deliver through it; what differs between them is where ids and history come
from. It is safe from OS threads and from greenlets alike: the lock is never held across
anything that could block or switch greenlets, so under gevent it is never contended.

Each subscription is a bounded mailbox (a list and an event) rather than a
:class:`queue.Queue`: the stream drains everything pending in one go, and a full mailbox
is not waited on but cut off, so that one slow reader never delays the others and never
makes the server buffer without bound.

After each write a stream's subscription is held, and frames that arrive meanwhile wait to
go out together, for up to :data:`WRITE_INTERVAL`; under gevent, only until the worker has
nothing else ready to run (:func:`~sse_flask.broker.wakeup.hold_pause`). An event to an idle
stream goes out at once; a busy stream sends its burst in a few writes instead of one per
event, which is what most of a worker's time goes to otherwise (waking the stream,
gunicorn's write path, a system call). A fixed window would hold back every event to a
stream that gets one more often than the window (each release that sends something holds
the stream again), adding up to the window to each under any load.

The fan-out's ticker ends a hold, and so does the first publish that finds it over: in a
worker that publishes back to back, the ticker runs late, after the publishes ready before
it (with only the ticker releasing them, holds of 5 ms lasted 6 to 9 ms at the median and up
to 72 ms at the 99th percentile).

Where the server lets streams write to their sockets (:mod:`sse_flask.worker`), the fan-out
writes for a stream that is waiting, without blocking: :meth:`Fanout.deliver` sends a frame
to a stream with nothing queued, and the release sends what a held stream gathered. The stream
stays held as if it had written, and its greenlet is not woken at all. A parked stream
(:meth:`Subscription.park`) has no greenlet: the fan-out sends through it the same way for as
long as it lasts, and its wake-ups run its next step in gevent's hub.

A :class:`Subscription`'s state changes only through its methods, each called by one side:
the broker gives the replay when it subscribes (:meth:`Fanout.subscribe`); the stream waits
(:meth:`Subscription.wait`, with the writer it offers for direct sends), holds after each
write and closes; the fan-out, under its lock, delivers, releases and ends.
"""

from __future__ import annotations

import enum
import math
import os
import threading
import time
import typing as t

from ..metrics import sent
from .wakeup import Wakeup, hold_pause, wakeup

__all__ = ["End", "Fanout", "Subscription"]

#: Seconds between the ticker's rounds: how late a wake-up by ``wake_at`` may be.
TICK = 0.25
#: Seconds at most that a stream holds the frames that arrive after a write, to send them in
#: one.
WRITE_INTERVAL = 0.005

#: What :meth:`Subscription.deliver` did with a frame.
_QUEUED, _SENT, _FULL = 0, 1, 2

#: ``direct(data, frames)``: see :meth:`Subscription.wait`.
Direct = t.Callable[[bytes, int], bool]


class End(str, enum.Enum):
    """Why a subscription or a stream ended: the text is what the ``stream closed (...)``
    log line says, and a member compares equal to it.

    The fan-out ends subscriptions as :attr:`SLOW`, :attr:`SHUTDOWN` and :attr:`JOB_ENDED`;
    a stream ends itself as :attr:`CLIENT` and :attr:`LIFETIME`; a view stream's task as
    :attr:`FINISHED` and :attr:`FAILED` (``sse.stream()``).
    """

    SLOW = "slow consumer"
    SHUTDOWN = "server shutting down"
    CLIENT = "client went away"
    JOB_ENDED = "job ended"
    LIFETIME = "lifetime reached"
    FINISHED = "items exhausted"
    FAILED = "items raised an error"

    def __str__(self) -> str:
        return self.value


class Subscription:
    """One stream's mailbox: frames waiting to be written, and the channels it listens to.

    Made by :meth:`Fanout.subscribe`; it changes only through its own methods, which the
    stream and the fan-out call. The attributes are there to be read.

    :attr replay: frames to write before anything live, given by the broker when the stream
        resumes after a ``Last-Event-ID``; see :meth:`take_replay`.
    :attr missed: whether the replay starts with a ``missed`` frame.
    :attr closed: ``None`` while open, else why the subscription ended.
    :attr taken: live frames handed out by :meth:`wait` so far.
    :attr wake_at: when (``time.monotonic()``) the fan-out's ticker wakes the current
        :meth:`wait`: the stream's next heartbeat or deadline.
    :attr skip_until: live frames at or before this position are not delivered: the client
        already has them (it resumed from a position this process had not reached yet).
    :attr held: set by :meth:`hold`: new frames do not wake :meth:`wait` until the fan-out
        releases the subscription.
    :attr direct: the ``direct`` of the current :meth:`wait`, else ``None``.
    """

    __slots__ = (
        "_fanout",
        "_frames",
        "_limit",
        "_on_drop",
        "_wakeup",
        "channels",
        "closed",
        "direct",
        "held",
        "missed",
        "replay",
        "skip_until",
        "taken",
        "wake_at",
    )

    def __init__(
        self,
        fanout: Fanout,
        channels: t.Sequence[str],
        limit: int,
        *,
        replay: t.Sequence[bytes] = (),
        missed: bool = False,
        skip_until: t.Any = None,
    ) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self.replay = list(replay)
        self.missed = missed
        self.closed: End | None = None
        self.taken = 0
        self.wake_at = math.inf
        self.skip_until = skip_until
        self.held = False
        self.direct: Direct | None = None
        self._on_drop: t.Callable[[], None] | None = None
        # A list, not a deque: an idle stream's empty deque holds a 64-slot block (760
        # bytes), an empty list 56.
        self._frames: list[bytes] = []
        self._wakeup = wakeup()
        self._limit = limit
        self._fanout = fanout

    def take_replay(self) -> list[bytes]:
        """The replay, handed out once: :attr:`replay` is empty afterwards."""
        replay, self.replay = self.replay, []
        return replay

    def extend_replay(self, frames: t.Iterable[bytes]) -> None:
        """Add ``frames`` to the end of the replay: what the broker delivered between reading
        the history and registering the subscription, before its stream started."""
        self.replay.extend(frames)

    def on_drop(self, callback: t.Callable[[], None]) -> None:
        """Have ``callback`` called, with the fan-out lock held, if the subscription is cut
        off for falling behind; the stream uses it to unblock a write to a client that does
        not read."""
        self._on_drop = callback

    def wait(
        self, timeout: float | None, *, wake_at: float = math.inf, direct: Direct | None = None
    ) -> bytes:
        """Wait up to ``timeout`` seconds for frames; return all pending ones, joined.

        Returns ``b""`` on time-out, on :meth:`wake`, and once closed with nothing pending.
        While held (see :meth:`hold`), it waits even with frames pending.

        :param wake_at: when the fan-out's ticker should end the wait, up to :data:`TICK`
            late: a wait without a timeout costs no timer of its own.
        :param direct: where the server lets the stream write to the client's socket
            (:mod:`sse_flask.worker`), ``direct(data, frames)`` sends ``frames`` joined as
            ``data`` at once, without blocking or switching, or returns ``False`` having
            sent nothing. While the wait lasts, the fan-out sends through it the frames that
            would otherwise wake the stream to write them.
        """
        self.wake_at = wake_at
        self.direct = direct
        try:
            if (self.held or not self._frames) and self.closed is None:
                self._wakeup.wait(timeout)
            self._wakeup.clear()
            return self.take()
        finally:
            self.direct = None

    def park(self, direct: Direct, wake: Wakeup) -> None:
        """Serve the stream without a greenlet from now on: the fan-out sends through
        ``direct`` as to a waiting stream for as long as the subscription lasts, and what
        would end a wait sets ``wake`` instead (a :class:`~.wakeup.CallbackWakeup`), whose
        callback calls :meth:`take`."""
        self.direct = direct
        self._wakeup = wake

    def take(self) -> bytes:
        """Every pending frame, joined: what :meth:`wait` returns once it stops waiting, and
        what a parked stream takes each time it is woken."""
        frames = self._frames
        count = len(frames)
        self.taken += count
        # Not under the lock: a frame delivered meanwhile from another thread stays.
        data = frames[0] if count == 1 else b"".join(frames[:count])
        del frames[:count]
        return data

    def sleep_until(self, when: float) -> None:
        """Have the fan-out's ticker wake a parked stream at ``when`` (see ``wake_at``)."""
        self.wake_at = when

    def wake(self) -> None:
        """Make a pending or the next :meth:`wait` return at once."""
        self._wakeup.set()

    def hold(self) -> None:
        """Make :meth:`wait` keep what arrives for up to :data:`WRITE_INTERVAL`, to be
        returned in one go; the stream calls it after each write."""
        fanout = self._fanout
        with fanout.lock:
            if self.closed is None:
                self._wakeup.clear()
                self.held = True
                fanout.release_later([self])

    def close(self, reason: End = End.CLIENT) -> None:
        """Stop receiving; idempotent. Frames already queued can still be drained."""
        self._fanout.remove(self, reason)

    def pending(self) -> int:
        """Frames queued and not yet taken by :meth:`wait`."""
        return len(self._frames)

    # The fan-out's side, called with its lock held.

    def deliver(self, frame: bytes, position: t.Any) -> int:
        """Send ``frame`` through :attr:`direct` if the stream waits with nothing queued and
        is not held (it is held then), else queue it and wake the stream unless held.

        :returns: ``_SENT``, ``_QUEUED`` (also when skipped, see :attr:`skip_until`), or
            ``_FULL``, queueing nothing, when the mailbox is full.
        """
        if self.skip_until is not None and not position > self.skip_until:
            return _QUEUED
        frames = self._frames
        if self.direct is not None and not self.held and not frames and self.direct(frame, 1):
            self.held = True
            return _SENT
        if len(frames) >= self._limit:
            return _FULL
        frames.append(frame)
        if not self.held:
            self._wakeup.set()
        return _QUEUED

    def release(self) -> tuple[int, int] | None:
        """End the hold: send what gathered through :attr:`direct` where the stream waits,
        staying held, and return how many frames and bytes went; else (``None``) wake the
        stream to write it, if anything gathered."""
        frames = self._frames
        if frames and self.direct is not None:
            data = b"".join(frames)
            count = len(frames)
            if self.direct(data, count):
                frames.clear()
                return count, len(data)
        self.held = False
        if frames:
            self._wakeup.set()
        return None

    def end(self, reason: End) -> bool:
        """Mark the subscription ended for ``reason`` and wake its stream; ``False`` if it
        had ended already. The fan-out calls it as it unregisters the subscription."""
        if self.closed is not None:
            return False
        self.closed = reason
        self._wakeup.set()
        return True

    def drop(self) -> None:
        """Discard what is queued and call the :meth:`on_drop` callback: the fan-out has cut
        the subscription off for falling behind."""
        self._frames.clear()
        if self._on_drop is not None:
            self._on_drop()


class Fanout:
    """The subscriptions of one broker in this process, by channel.

    A ticker thread (a greenlet under gevent) wakes each subscription whose ``wake_at``
    has come, every :data:`TICK` seconds, so that idle streams can wait without a
    timeout: a timed wait costs a timer per wake-up, which adds up to a fifth of a
    worker's time when thousands of streams wake for every event. The same thread
    releases held subscriptions while there are any, after each hold, unless a publish
    has done so first (see the module's description).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dropped = 0
        #: Set by :meth:`close_all`: the process is stopping, and new subscriptions end at once.
        self.closed = False
        self._channels: dict[str, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        self._held: list[Subscription] = []
        self._holding = threading.Event()
        #: When (``time.monotonic()``) the held subscriptions are due for release.
        self._release_at = math.inf
        self._ticker_pid: int | None = None

    def subscribe(
        self,
        channels: t.Sequence[str],
        limit: int,
        *,
        replay: t.Sequence[bytes] = (),
        missed: bool = False,
        skip_until: t.Any = None,
    ) -> Subscription:
        """Register a subscription to ``channels``, with a mailbox of ``limit`` frames. The
        caller holds :attr:`lock`.

        :param replay: the frames its stream writes first (:attr:`Subscription.replay`).
        :param missed: whether ``replay`` starts with a ``missed`` frame.
        :param skip_until: the position up to which live frames are not delivered to it
            (:attr:`Subscription.skip_until`).

        Once :meth:`close_all` has run, it is returned already closed: a client that
        reconnects over a kept-alive connection to a stopping worker must go elsewhere.
        """
        subscription = Subscription(
            self, channels, limit, replay=replay, missed=missed, skip_until=skip_until
        )
        if self.closed:
            subscription.end(End.SHUTDOWN)
            return subscription
        for channel in subscription.channels:
            self._channels.setdefault(channel, set()).add(subscription)
        self._subscriptions.add(subscription)
        if self._ticker_pid != os.getpid():
            # Started on first use, and again in a forked child, which has no threads.
            self._ticker_pid = os.getpid()
            threading.Thread(target=self._tick, name="sse-flask ticker", daemon=True).start()
        return subscription

    def deliver(self, channel: str, frame: bytes, position: t.Any = None) -> None:
        """Offer ``frame`` to every subscriber of ``channel``. The caller holds :attr:`lock`.

        :param position: where the frame stands in the broker's order, compared with
            :attr:`Subscription.skip_until` by brokers that set it.
        """
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        slow: list[Subscription] = []
        held: list[Subscription] = []
        for subscription in subscribers:
            if outcome := subscription.deliver(frame, position):
                (held if outcome == _SENT else slow).append(subscription)
        if held:
            sent.add(len(held), len(held) * len(frame))
            self.release_later(held)
        for subscription in slow:
            self.dropped += 1
            self._unregister(subscription, End.SLOW)
            subscription.drop()
        if self._held and time.monotonic() >= self._release_at:
            # The ticker may be late: publishes that keep coming run before it.
            self._release_held()

    def release_later(self, subscriptions: list[Subscription]) -> None:
        """Have the held ``subscriptions`` (see :meth:`Subscription.hold`) released when the
        current hold ends, by the ticker or the first publish after it. The caller holds
        :attr:`lock`."""
        if not self._held:
            self._start_hold()
        self._held.extend(subscriptions)

    def remove(self, subscription: Subscription, reason: End) -> None:
        """Unregister ``subscription``, if it still is, and wake its stream."""
        with self.lock:
            self._unregister(subscription, reason)

    def close_all(self) -> None:
        """End every subscription and refuse new ones: the process is stopping, and its
        clients must reconnect elsewhere."""
        with self.lock:
            self.closed = True
            for subscription in list(self._subscriptions):
                self._unregister(subscription, End.SHUTDOWN)

    def end_channel(self, channel: str, reason: End) -> None:
        """End every subscription to ``channel``, after what was delivered to it (a job's
        last event): their streams write what they have queued, then finish. The caller
        holds :attr:`lock`."""
        for subscription in list(self._channels.get(channel, ())):
            self._unregister(subscription, reason)

    def __len__(self) -> int:
        """Open subscriptions."""
        return len(self._subscriptions)

    def stats(self, *, backend: str, published: int) -> dict[str, t.Any]:
        """A broker's ``/stats``: open subscriptions in all and per channel, ``published``,
        slow consumers dropped, and ``backend``."""
        with self.lock:
            channels = {channel: len(subs) for channel, subs in self._channels.items()}
            consumers = len(self._subscriptions)
        return {
            "consumers": consumers,
            "channels": channels,
            "published": published,
            "dropped": self.dropped,
            "backend": backend,
        }

    def _tick(self) -> None:
        pause = hold_pause()
        next_tick = time.monotonic() + TICK
        while not self.closed:
            if self._holding.wait(max(next_tick - time.monotonic(), 0.0)):
                # A publish may release the hold meanwhile, and start the next one: then this
                # waits again, for the next one's end. At most WRITE_INTERVAL: where streams
                # are threads, a publish may end the hold after the wait above, leaving no
                # due time.
                wait = min(self._release_at - time.monotonic(), WRITE_INTERVAL)
                idle = pause(max(wait, 0.0))
                if idle or time.monotonic() >= self._release_at:
                    with self.lock:
                        self._release_held()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK
                with self.lock:
                    subscriptions = list(self._subscriptions)
                for subscription in subscriptions:
                    if subscription.wake_at <= now:
                        subscription.wake()

    def _start_hold(self) -> None:
        """Start a hold of what :meth:`release_later` is given from now on, due for release
        :data:`WRITE_INTERVAL` from now. The caller holds :attr:`lock`."""
        self._release_at = time.monotonic() + WRITE_INTERVAL
        self._holding.set()

    def _release_held(self) -> None:
        """Release every held subscription (:meth:`Subscription.release`); those that sent
        what they gathered straight away stay held, for the next hold. The caller holds
        :attr:`lock`."""
        frames_sent = bytes_sent = 0
        held, self._held = self._held, []
        for subscription in held:
            if (direct := subscription.release()) is not None:
                frames_sent += direct[0]
                bytes_sent += direct[1]
                self._held.append(subscription)
        if self._held:
            self._start_hold()
        else:
            self._release_at = math.inf
            self._holding.clear()
        if frames_sent:
            sent.add(frames_sent, bytes_sent)

    def _unregister(self, subscription: Subscription, reason: End) -> None:
        if not subscription.end(reason):
            return
        for channel in subscription.channels:
            subscribers = self._channels[channel]
            subscribers.discard(subscription)
            if not subscribers:
                del self._channels[channel]
        self._subscriptions.discard(subscription)
