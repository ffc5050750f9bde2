"""Everything gunicorn: the settings for long-lived streams, the hooks that close streams
on a stop and sum ``/metrics`` over the workers, the open files limit, and the
``BaseApplication`` that ``sse-flask serve`` runs (gunicorn.conf.py imports the same).
"""

from __future__ import annotations

import atexit
import gc
import ipaddress
import logging
import os
import resource
import shutil
import tempfile
import typing as t

import click

if t.TYPE_CHECKING:
    from flask import Flask
    from gunicorn.workers.base import Worker

#: Settings for long-lived streams, whatever gunicorn's defaults are.
GUNICORN_SETTINGS: dict[str, t.Any] = {
    "worker_class": "sse_flask.worker.GeventWorker",
    # Each open stream holds one of a worker's connections (gunicorn's default is 1000);
    # room for 10,000 streams and the requests that publish and poll beside them.
    "worker_connections": 20000,
    # Seconds a stopping worker waits for open requests. Streams are closed as soon as the
    # worker stops accepting (see post_worker_init), so this only bounds stragglers.
    "graceful_timeout": 10,
    "keepalive": 5,
    # gunicornc is not used; without this, two servers on one machine share a socket path.
    "control_socket_disable": True,
}


class Server:
    """gunicorn's ``BaseApplication`` around an app import string (built lazily, so that
    ``import sse_flask.serving`` does not import gunicorn)."""

    def __new__(cls, app_uri: str, options: dict[str, t.Any]) -> t.Any:
        from gunicorn.app.base import BaseApplication

        class Server(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in options.items():
                    if key in self.cfg.settings:
                        self.cfg.set(key, value)
                self.cfg.set("post_worker_init", post_worker_init)
                self.cfg.set("child_exit", child_exit)
                self.cfg.set("worker_exit", worker_exit)

            def load(self) -> Flask:
                return _load_app(app_uri, options["bind"])

        return Server()


def _load_app(app_uri: str, bind: str) -> Flask:
    from flask import Flask
    from gunicorn.util import import_app

    app = import_app(app_uri)
    if not isinstance(app, Flask) and callable(app):
        app = app()
    if not isinstance(app, Flask):
        raise click.ClickException(f"--app {app_uri} is neither a Flask app nor a factory that returns one")
    state = app.extensions.get("sse")
    if state is not None and state.settings.publish_token is None and not _is_loopback(bind):
        app.logger.warning(
            "/say accepts publishes from anyone who can reach %s; set SSE_PUBLISH_TOKEN to require a token", bind
        )
    return app


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
    workers at once instead of hanging until the graceful timeout."""
    from .servers import watch_worker

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


def _is_loopback(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]") if ":" in bind else bind
    if host == "localhost" or bind.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def raise_open_files_limit(wanted: int) -> None:
    """Each stream holds a file descriptor; raise the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
