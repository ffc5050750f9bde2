"""Everything gunicorn: the settings for long-lived streams, the hooks that close streams
on a stop and sum ``/metrics`` over the workers, the open files limit, and the
``BaseApplication`` that ``sse-flask serve`` runs (gunicorn.conf.py imports the same).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import traceback
import typing as t

if t.TYPE_CHECKING:
    from flask import Flask
    from gunicorn.workers.base import Worker

#: The port ``serve`` listens on when ``--bind`` names none (gunicorn's own is 8000).
DEFAULT_PORT = 8080

#: Settings for long-lived streams, whatever gunicorn's defaults are.
GUNICORN_SETTINGS: dict[str, t.Any] = {
    "worker_class": "sse_flask.worker.GeventWorker",
    # Each open stream holds one of a worker's connections (gunicorn's default is 1000);
    # room for as many as a process's open files allow (19,000 streams held by one worker in
    # benchmarks/, where the limit is 20,000) and the requests that publish and poll beside them.
    "worker_connections": 20000,
    # Seconds a stopping worker waits for open requests. Streams are closed as soon as the
    # worker stops accepting (see post_worker_init), so this only bounds stragglers.
    "graceful_timeout": 10,
    "keepalive": 5,
    # The accept queue: after a deploy or a network blip every client reconnects at once, and
    # a connection the queue has no room for waits for the client to retry its SYN, a second
    # or more later (gunicorn's default is 2048). The kernel caps it at net.core.somaxconn
    # (4096 by default since Linux 5.4), as for Go, whose listeners ask for that.
    "backlog": 65535,
    # gunicornc is not used; without this, two servers on one machine share a socket path.
    "control_socket_disable": True,
    # Subscribe tokens travel in stream URLs: keep them out of the access and error logs.
    "logger_class": "sse_flask.logs.GunicornLogger",
}


class ServeError(Exception):
    """What keeps ``serve`` from starting, in one line for the user: raised before the port
    is bound."""


def check_bind(bind: str) -> str:
    """Check that ``bind`` can be listened on now, and return it with the port spelled out.

    gunicorn would retry a bind that fails for five seconds, saying "connection to"; a name
    that does not resolve or a port in use does not get better by waiting. The socket is
    closed again at once: gunicorn binds it itself.

    :raises ServeError: naming ``bind`` and what is wrong with it.
    """
    from gunicorn.util import parse_address

    if bind.startswith(("unix:", "fd://")):
        return bind
    try:
        host, port = parse_address(bind, default_port=str(DEFAULT_PORT))
    except RuntimeError as e:
        raise ServeError(f"--bind {bind!r} is not HOST:PORT: {e}") from None
    if not 0 <= port <= 65535:
        raise ServeError(f"--bind {bind!r}: the port must be 0 to 65535")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"--bind {bind!r}: cannot resolve {host!r} ({e.strerror})") from None
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as probe:
        # As gunicorn binds: an address in TIME_WAIT is free, one that is listening is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise ServeError(f"--bind {bind!r}: cannot listen there ({e.strerror})") from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_app(app_uri: str) -> None:
    """Load the app once in a child process, so that a missing module, a bad setting or a
    factory that fails stops ``serve`` before it binds the port, in one line.

    The workers load the app themselves after gevent has patched them, so the master
    imports nothing of it: the child is forked, loads the app with logging silenced (the
    workers log what loading says) and reports back through a pipe.

    :raises ServeError: with the problem; a traceback only for an error in the app's code.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Whatever happens, the child ends here: it must never go on to run gunicorn.
        failed = True
        try:
            os.close(reader)
            logging.disable(logging.CRITICAL)
            try:
                load_app(app_uri)
                problem, failed = "", False
            except ServeError as e:
                problem = str(e)
            except BaseException:
                problem = traceback.format_exc().rstrip()
            with os.fdopen(writer, "w", encoding="utf-8") as pipe:
                pipe.write(problem)
        finally:
            os._exit(1 if failed else 0)
    os.close(writer)
    with os.fdopen(reader, encoding="utf-8") as pipe:
        problem = pipe.read()
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status != 0:
        raise ServeError(problem or f"loading --app {app_uri} failed (exit status {status})")


def load_app(app_uri: str) -> Flask:
    """The Flask app ``app_uri`` names, ``MODULE:APP`` or ``MODULE:FACTORY``, imported from
    the working directory first, as gunicorn and ``flask run`` do.

    :raises ServeError: if the module or attribute is missing, or is not a Flask app or
        a factory returning one; a bad ``SSE_*`` setting, naming the key and its source.
    """
    from flask import Flask
    from gunicorn.errors import AppImportError
    from gunicorn.util import import_app

    from .errors import ConfigError

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = app_uri.partition(":")[0]
    try:
        app = import_app(app_uri)
        if not isinstance(app, Flask) and callable(app):
            app = app()
    except ModuleNotFoundError as e:
        if e.name is None or not (module + ".").startswith(e.name + "."):
            raise
        where = f"in {os.getcwd()} (the working directory) or on the Python path"
        raise ServeError(f"--app {app_uri}: no module named {e.name!r} {where}") from None
    except AppImportError as e:
        source = getattr(sys.modules.get(module), "__file__", None) or module
        raise ServeError(f"--app {app_uri}: {str(e).rstrip('.')}, loaded from {source}") from None
    except ConfigError as e:
        raise ServeError(str(e)) from None
    if not isinstance(app, Flask):
        raise ServeError(f"--app {app_uri} is neither a Flask app nor a factory that returns one")
    return app


def run(app_uri: str, bind: str, workers: int) -> None:
    """Run gunicorn in this process on ``app_uri``, with :data:`GUNICORN_SETTINGS`, once
    :func:`check_bind` and :func:`check_app` have passed.

    :raises ServeError: from those checks, with the port never taken.
    """
    bind = check_bind(bind)
    check_app(app_uri)
    prepare_metrics_dir()
    raise_open_files_limit(workers * GUNICORN_SETTINGS["worker_connections"] + 1024)
    _server(app_uri, {**GUNICORN_SETTINGS, "bind": bind, "workers": workers}).run()


def _server(app_uri: str, options: dict[str, t.Any]) -> t.Any:
    """gunicorn's ``BaseApplication`` around an app import string (built here, so that
    ``import sse_flask.serving`` does not import gunicorn)."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import AppImportError

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {**options, **HOOKS}.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            try:
                app = load_app(app_uri)
            except ServeError as e:
                raise AppImportError(str(e)) from None
            return app

    return Server()


def prepare_metrics_dir() -> None:
    """Give the workers one fresh directory for prometheus_client's multiprocess mode
    (unless ``PROMETHEUS_MULTIPROC_DIR`` is set), so that ``/metrics`` sums them all;
    the master removes it when it exits."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    directory = tempfile.mkdtemp(prefix="sse-flask-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    master = os.getpid()

    def remove() -> None:
        # Forked workers inherit this exit handler: only the master may remove the files.
        if os.getpid() == master:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)


def child_exit(server: t.Any, worker: Worker) -> None:
    """gunicorn hook, in the master: drop an exited worker's open-streams gauge from
    ``/metrics`` (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def worker_exit(server: t.Any, worker: Worker) -> None:
    """gunicorn hook, in an exiting worker: hand back to the collector what
    :func:`post_worker_init` froze, so that it goes before the interpreter tears modules
    down (freed later, logging's handlers fail noisily under gevent)."""
    gc.unfreeze()


def post_worker_init(worker: Worker) -> None:
    """gunicorn hook: end this worker's open streams when it stops or recycles (see
    :func:`~sse_flask.servers.watch_worker`), so that its clients reconnect to the next
    workers at once instead of hanging until the graceful timeout, and each stream logs
    ``stream closed``.

    SIGINT (Ctrl-C) stops the worker as gracefully as SIGTERM: gunicorn's own SIGINT
    handler exits at once, cutting streams off mid-chunk (see :func:`on_starting` for the
    master).
    """
    from .servers import watch_worker

    signal.signal(signal.SIGINT, worker.handle_exit)
    watch_worker(worker)
    logger = logging.getLogger("sse_flask")
    if not logger.handlers:
        # Our lines (a stream closed, Redis lost) go where gunicorn's own go, through its
        # logger's handlers (sharing the handlers themselves makes logging complain at exit).
        logger.parent = worker.log.error_log
        logger.setLevel(worker.log.error_log.level)
    # Everything allocated while loading the app lives as long as the worker: keep it out
    # of the collector's way, and collect less often. Each wake-up of thousands of streams
    # allocates a little, and with the default thresholds collections were the largest
    # cost of fanning an event out to 5,000 streams (p99 924 ms, 290 ms with these).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # gunicorn logs "Booting worker" before the app loads; this says the worker serves.
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def on_starting(server: t.Any) -> None:
    """gunicorn hook, in the master: stop on SIGINT (Ctrl-C) as on SIGTERM, telling the
    workers to stop gracefully, which closes their streams cleanly. A second SIGINT while
    they stop still stops them at once (gunicorn's quick shutdown)."""
    server.handle_int = server.handle_term


#: The hooks above, by gunicorn setting name: ``serve`` and :mod:`sse_flask.gunicorn_conf`
#: both install these.
HOOKS: dict[str, t.Callable[..., None]] = {
    "on_starting": on_starting,
    "post_worker_init": post_worker_init,
    "child_exit": child_exit,
    "worker_exit": worker_exit,
}


def raise_open_files_limit(wanted: int) -> None:
    """Each stream holds a file descriptor; raise the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
