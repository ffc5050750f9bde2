"""The WSGI server streams run under: how many it can hold, and ending them when it stops.

A stream holds what the server serves one request with for as long as the client stays: a
greenlet under gevent (thousands per worker; under sse-flask's worker class, only until its
opening is written, see :mod:`sse_flask.worker`), a thread under a threaded server (gunicorn's
``gthread``, waitress, Flask's dev server), or the whole worker under a server that serves
one request at a time (gunicorn's default sync worker), which would then serve nothing
else. :func:`stream_limit` tells them apart from the WSGI environ and, under gunicorn, from
the worker object serving the request (found once per process on the call stack, since
gunicorn puts neither it nor its thread count in the environ). Flask's dev server starts a
thread per connection, so it has no bound of its own: only ``SSE_MAX_CONNECTIONS``. Nor does
werkzeug's test client, which runs the app in its caller's thread (and names no server).

Under gunicorn, :func:`watch_worker` ends the streams when the worker stops: on ``SIGTERM``
(a stop or reload) and on ``--max-requests``, which only clears the worker's ``alive`` flag.
The in-process broker refuses publishes from then on (their history would go with the
worker), and the streams close once the worker has closed its listener: closed sooner, their
clients would reconnect straight back into the stopping worker.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import typing as t
import weakref

__all__ = ["close_all_streams", "register", "stop_publishing", "stream_limit", "watch_worker"]

log = logging.getLogger("sse_flask")

#: Streams per process under a threaded server whose thread count cannot be read.
UNKNOWN_THREADS_LIMIT = 4
#: Seconds between looks at a gunicorn worker's ``alive`` flag and listeners.
_WATCH_INTERVAL = 0.05
#: Seconds a stopping worker's streams wait for its listener to close (gunicorn's gevent
#: worker looks at its flag once a second).
_LISTENER_WAIT = 1.5
_GEVENT_ADVICE = "serve streams with gevent: gunicorn -k gevent (thousands of streams per worker)"


class _Bound(t.NamedTuple):
    """What the server itself allows: ``streams`` (``None``: no bound), and why no more."""

    streams: int | None
    refusal: str = ""
    #: The thread count is unknown: ``SSE_MAX_CONNECTIONS``, when set, replaces the guess.
    guessed: bool = False


#: The gunicorn worker of each process (``None``: not under gunicorn), found once.
_workers: dict[int, t.Any] = {}
#: Processes that have logged that they refuse every stream.
_warned: set[int] = set()
_watched: set[int] = set()


class _Streams(t.Protocol):
    """An app's streams, as :class:`sse_flask.state.AppState` holds them."""

    @property
    def broker(self) -> t.Any: ...
    @property
    def views(self) -> t.Any: ...


#: Every app state in this process, so that a stopping worker can end all streams.
_STATES: weakref.WeakSet[_Streams] = weakref.WeakSet()


def register(state: _Streams) -> None:
    """Have :func:`stop_publishing` and :func:`close_all_streams` reach ``state``'s streams."""
    _STATES.add(state)


def stream_limit(environ: t.Mapping[str, t.Any], max_connections: int) -> tuple[int | None, str]:
    """The most streams this process may hold (``None``: no limit), and the error past it.

    :param environ: the WSGI environ of a request to ``/events``.
    :param max_connections: ``SSE_MAX_CONNECTIONS``; 0 means unset.
    """
    bound = _server_bound(environ)
    if bound.streams == 0 and os.getpid() not in _warned:
        _warned.add(os.getpid())
        log.warning(
            "/events refuses every stream in this worker (pid %s): %s", os.getpid(), bound.refusal
        )
    if (
        bound.streams is None
        or (bound.guessed and max_connections)
        or 0 < max_connections < bound.streams
    ):
        return max_connections or None, (
            f"this worker already serves {max_connections} streams, its limit (SSE_MAX_CONNECTIONS)"
        )
    return bound.streams, bound.refusal


def watch_worker(worker: t.Any) -> None:
    """End this gunicorn worker's streams when it stops or recycles; once per process."""
    pid = os.getpid()
    if pid in _watched:
        return
    _watched.add(pid)
    # A daemon thread, or a greenlet under gevent's patching, as the fan-out's ticker is.
    threading.Thread(
        target=_watch, args=(worker,), name="sse-flask worker watch", daemon=True
    ).start()


def stop_publishing() -> None:
    """Refuse publishes whose history would go with this process; a stopping gunicorn
    worker calls it as soon as it is told to stop, before its streams close."""
    for state in list(_STATES):
        state.broker.stop_publishing()


def close_all_streams() -> None:
    """End every open stream in this process, so that clients reconnect elsewhere.

    A stopping gunicorn worker calls it: otherwise it would wait for its streams until the
    graceful timeout, and its clients would hang until then.
    """
    for state in list(_STATES):
        state.broker.close()
        state.views.close_all()


def _watch(worker: t.Any) -> None:
    while worker.alive:
        time.sleep(_WATCH_INTERVAL)
    stop_publishing()
    deadline = time.monotonic() + _LISTENER_WAIT
    while time.monotonic() < deadline and any(sock.fileno() != -1 for sock in worker.sockets):
        time.sleep(_WATCH_INTERVAL)
    close_all_streams()


def _server_bound(environ: t.Mapping[str, t.Any]) -> _Bound:
    worker = _gunicorn_worker()
    if worker is not None:
        bound = _gunicorn_bound(worker)
        if bound.streams != 0:
            watch_worker(worker)
        return bound
    if _green() or "SERVER_SOFTWARE" not in environ:
        # gevent; or no server at all: werkzeug's test client runs the app in its caller's thread.
        return _Bound(None)
    disconnected = environ.get("waitress.client_disconnected")
    if disconnected is not None:
        threads = int(disconnected.__self__.adj.threads)
        return _threads_limit(threads, f"waitress --threads={threads}")
    if "werkzeug.socket" in environ:
        # Flask's dev server: a thread (or a process) per connection, unless neither.
        if environ.get("wsgi.multithread") or environ.get("wsgi.multiprocess"):
            return _Bound(None)
    elif environ.get("wsgi.multithread"):
        return _Bound(
            UNKNOWN_THREADS_LIMIT,
            (
                f"this server's thread count is unknown, so it holds at most "
                f"{UNKNOWN_THREADS_LIMIT} streams per process, keeping threads for the app's "
                f"other views; set SSE_MAX_CONNECTIONS to its threads minus one, or "
                f"{_GEVENT_ADVICE}"
            ),
            guessed=True,
        )
    return _Bound(
        0,
        (
            f"{environ['SERVER_SOFTWARE']} serves one request at a time per process, so an event "
            f"stream would stop it serving anything else; {_GEVENT_ADVICE}, or a threaded server"
        ),
    )


def _gunicorn_bound(worker: t.Any) -> _Bound:
    from gunicorn.workers.base_async import AsyncWorker
    from gunicorn.workers.gthread import ThreadWorker

    if isinstance(worker, AsyncWorker):
        return _Bound(None)
    if isinstance(worker, ThreadWorker):
        threads = int(worker.cfg.threads)
        return _threads_limit(threads, f"gunicorn -k gthread --threads {threads}")
    return _Bound(
        0,
        (
            "gunicorn's sync worker serves one request at a time, so an event stream would stop it "
            "serving anything else; run gunicorn with -k gevent (thousands of streams per worker) "
            "or -k gthread --threads N (N - 1 streams per worker)"
        ),
    )


def _threads_limit(threads: int, server: str) -> _Bound:
    """One stream per thread, keeping one thread for the app's other views."""
    limit = max(threads - 1, 0)
    return _Bound(
        limit,
        (
            f"this worker already serves {limit} streams: each holds one of the {threads} "
            f"threads of {server}, and one stays free for the app's other views; raise "
            f"--threads, or {_GEVENT_ADVICE}"
        ),
    )


def _gunicorn_worker() -> t.Any:
    """The gunicorn worker of this process: the first time, the one whose method is on
    the call stack (gunicorn's workers call the app from their ``handle_request``)."""
    pid = os.getpid()
    if pid not in _workers:
        _workers[pid] = None
        base = sys.modules.get("gunicorn.workers.base")
        frame = sys._getframe(1) if base is not None else None
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, t.cast(t.Any, base).Worker):
                _workers[pid] = candidate
                break
            frame = frame.f_back
    return _workers[pid]


def _green() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))
