"""What differs where streams are greenlets: a subscription's wake-up, a
:class:`threading.Event` where streams are threads, a bare greenlet switch
(:class:`GreenletWakeup`) under gevent's monkey-patching, and a callback run by gevent's hub
for a stream parked without a greenlet (:class:`CallbackWakeup`); and how long the fan-out's
ticker waits out a hold (:func:`hold_pause`)."""

from __future__ import annotations

import sys
import threading
import time
import typing as t

__all__ = ["CallbackWakeup", "GreenletWakeup", "Wakeup", "callback_wakeup", "hold_pause", "wakeup"]


class Wakeup(t.Protocol):
    """What a subscription waits on: set by deliveries, cleared and waited on by its stream."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None) -> object: ...


def wakeup() -> Wakeup:
    """A :class:`threading.Event` for the calling thread to wait on; under gevent's
    monkey-patching, a :class:`GreenletWakeup` for the calling greenlet."""
    if not _patched():
        return threading.Event()
    import gevent

    from ..worker import hub_thread, os_thread

    return GreenletWakeup(gevent.get_hub(), hub_thread(), os_thread)


def callback_wakeup(callback: t.Callable[[], None]) -> CallbackWakeup:
    """A :class:`CallbackWakeup` running ``callback`` in this thread's gevent hub."""
    import gevent

    from ..worker import hub_thread, os_thread

    return CallbackWakeup(gevent.get_hub(), hub_thread(), os_thread, callback)


def hold_pause() -> t.Callable[[float], bool]:
    """How the fan-out's ticker waits before it releases held subscriptions, given the most
    it may wait; it returns whether it stopped early because the worker is idle. Where
    streams are threads it waits all of it; under gevent's monkey-patching, only until the
    hub has nothing else ready to run (:func:`gevent.idle`). A worker with time to spare then
    sends what a held stream gathered at once, and a busy one still gathers what arrives
    while it works, for up to the whole wait."""
    if not _patched():

        def sleep(seconds: float) -> bool:
            time.sleep(seconds)
            return False

        return sleep
    import gevent

    def until_idle(seconds: float) -> bool:
        with gevent.Timeout(seconds, False):
            gevent.idle()
            return True
        return False

    return until_idle


def _run_in_hub(
    hub: t.Any,
    hub_thread: int | None,
    os_thread: t.Callable[[], int],
    callback: t.Callable[[], None],
) -> None:
    """Have ``hub`` run ``callback`` soon: through its loop's thread-safe queue when called
    from another OS thread than the hub's (any thread, if ``hub_thread`` is unknown)."""
    if os_thread() == hub_thread:
        hub.loop.run_callback(callback)
    else:
        hub.loop.run_callback_threadsafe(callback)


def _patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


class GreenletWakeup:
    """An event that one greenlet waits on, woken by a bare switch from the hub.

    gevent's own Event keeps lists of links for any number of waiters, in any thread;
    one stream has one waiter, and this costs less than half as much per wake-up, which
    is most of the work when an event fans out to thousands of streams. :meth:`set` from
    another OS thread than the hub's (any thread, if ``hub_thread`` is unknown) goes through
    the loop's thread-safe queue.
    """

    __slots__ = ("_current", "_flag", "_hub", "_hub_thread", "_scheduled", "_thread", "_waiter")

    def __init__(self, hub: t.Any, hub_thread: int | None, os_thread: t.Callable[[], int]) -> None:
        import gevent

        self._flag = False
        self._waiter: t.Any = None
        self._scheduled = False
        self._hub = hub
        self._hub_thread = hub_thread
        self._thread = os_thread
        self._current = gevent.getcurrent

    def set(self) -> None:
        self._flag = True
        if self._waiter is not None and not self._scheduled:
            self._scheduled = True
            _run_in_hub(self._hub, self._hub_thread, self._thread, self._wake)

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None) -> bool:
        if self._flag:
            return True
        self._waiter = self._current()
        timer = None
        if timeout is not None:
            timer = self._hub.loop.timer(timeout)
            timer.start(self._wake)
        try:
            self._hub.switch()
        finally:
            self._waiter = None
            if timer is not None:
                timer.close()
        return self._flag

    def _wake(self) -> None:
        # Runs in the hub. The waiter may have been woken already (time-out, or set()
        # twice): switch only into a greenlet that is still waiting here.
        self._scheduled = False
        if self._waiter is not None:
            self._waiter.switch()


class CallbackWakeup:
    """The wake-up of a stream that no greenlet serves (see
    :meth:`sse_flask.stream.EventStream.park`): :meth:`set` has the hub run ``callback``
    soon, once however often it is set meanwhile, from any OS thread as
    :class:`GreenletWakeup` does. Nothing waits on it."""

    __slots__ = ("_callback", "_hub", "_hub_thread", "_scheduled", "_thread")

    def __init__(
        self,
        hub: t.Any,
        hub_thread: int | None,
        os_thread: t.Callable[[], int],
        callback: t.Callable[[], None],
    ) -> None:
        self._callback = callback
        self._scheduled = False
        self._hub = hub
        self._hub_thread = hub_thread
        self._thread = os_thread

    def set(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            _run_in_hub(self._hub, self._hub_thread, self._thread, self._run)

    def clear(self) -> None:
        """Nothing to clear: what a set left scheduled runs, and finds nothing to do."""

    def wait(self, timeout: float | None) -> bool:
        raise RuntimeError("a parked stream's subscription is not waited on")

    def _run(self) -> None:
        self._scheduled = False
        self._callback()
