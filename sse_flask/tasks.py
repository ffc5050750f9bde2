"""Running an iterable apart from the code that asked for it: a greenlet under gevent's
monkey-patching, a thread otherwise (detected as :mod:`sse_flask.broker.fanout` does).

View streams (:mod:`sse_flask.viewstream`) use it so that their writer can send heartbeats
while the items are slow to come; jobs (:mod:`sse_flask.jobs`) so that the work outlives
the request that started it.

Cancelling closes the items: under gevent at once, by raising :class:`GeneratorExit` where
the items' code waits (a sleep, a socket read), which is what ``generator.close()`` would
raise at a ``yield``. On threads nothing can interrupt a step that is running, so the items
are closed as soon as that step returns (at its next ``yield``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import typing as t

__all__ = ["CANCELLED", "DONE", "ERROR", "Task"]

log = logging.getLogger("sse_flask")

#: How a task ended, as its ``finish`` callback is told.
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"


class Task:
    """Iterate ``items()`` in a greenlet or a thread, inside ``context()``.

    :param items: called in the task; returns the iterable to run through.
    :param emit: called in the task with each item; it may wait (back-pressure) and return
        ``False`` to stop early, as if cancelled.
    :param finish: called in the task, still inside the context, with how it ended
        (:data:`DONE`, :data:`ERROR` or :data:`CANCELLED`) and the number of items emitted.
    :param context: entered around everything the task runs (an app or request context).
    :param name: for the log and the thread's name.
    """

    def __init__(
        self,
        items: t.Callable[[], t.Iterable[t.Any]],
        *,
        emit: t.Callable[[t.Any], bool],
        finish: t.Callable[[str, int], None],
        context: t.Callable[[], t.ContextManager[t.Any]] = contextlib.nullcontext,
        name: str,
    ) -> None:
        self._items = items
        self._emit = emit
        self._finish = finish
        self._context = context
        self.name = name
        #: Set by :meth:`cancel`; the task stops at its next chance.
        self.cancelled = False
        self._in_items = False
        self._greenlet: t.Any = None
        self._hub: t.Any = None
        #: The OS thread of gevent's hub; ``None`` off gevent, or if the hub does not say.
        self._hub_thread: int | None = None
        self._thread: t.Callable[[], int] = threading.get_ident
        self._current: t.Callable[[], t.Any] = threading.current_thread

    def start(self) -> None:
        """Start running, in a greenlet under gevent, else in a daemon thread."""
        monkey = sys.modules.get("gevent.monkey")
        if monkey is not None and monkey.is_module_patched("threading"):
            import gevent

            from .worker import hub_thread, os_thread

            self._hub = gevent.get_hub()
            self._hub_thread = hub_thread()
            self._thread = os_thread
            self._current = gevent.getcurrent
            self._greenlet = gevent.spawn(self._run)
        else:
            threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def cancel(self) -> None:
        """Close the items: at once under gevent, else when their current step returns.

        Safe from any greenlet or thread, and more than once.
        """
        if self.cancelled:
            return
        self.cancelled = True
        if self._hub is None:
            return
        if self._thread() != self._hub_thread:
            # From another OS thread (or from any, if the hub's is unknown: this is safe
            # from the hub's too).
            self._hub.loop.run_callback_threadsafe(self._interrupt)
            return
        current = self._current()
        if current is self._hub:
            self._interrupt()
        elif self._in_items and not self._greenlet.dead:
            # At once, from this greenlet (a stream whose client left): the hub switches
            # back here once the items have been closed and the task waits or ends, rather
            # than after every other greenlet it has to wake first.
            self._hub.loop.run_callback(current.switch)
            self._greenlet.throw(GeneratorExit)

    def _interrupt(self) -> None:
        # In the hub. Only into the items' own code: an exception landing in the task's
        # publishing or clean-up could leave a connection half used.
        if self._in_items and not self._greenlet.dead:
            self._greenlet.throw(GeneratorExit)

    def _run(self) -> None:
        count = 0
        outcome = CANCELLED
        try:
            with self._context():
                iterator: t.Iterator[t.Any] | None = None
                try:
                    if not self.cancelled:
                        self._in_items = True
                        iterator = iter(self._items())
                        for item in iterator:
                            self._in_items = False
                            if self.cancelled or not self._emit(item):
                                break
                            count += 1
                            if self.cancelled:
                                break
                            self._in_items = True
                        else:
                            outcome = DONE
                except GeneratorExit:
                    # Thrown in by cancel(): the items have been closed where they waited.
                    pass
                except Exception:
                    log.exception("%s failed after %d items", self.name, count)
                    outcome = ERROR
                finally:
                    self._in_items = False
                    _close(iterator, self.name)
                self._finish(outcome, count)
        except GeneratorExit:
            log.debug("%s was cancelled while it finished", self.name)
        except Exception:
            log.exception("%s could not finish", self.name)


def _close(iterator: t.Iterator[t.Any] | None, name: str) -> None:
    """Close ``iterator`` if it can be (a generator's ``finally`` runs now)."""
    close = getattr(iterator, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception("%s failed while it was closed", name)
