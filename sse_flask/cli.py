"""The ``sse-flask`` command: ``serve``, ``say`` and ``listen``.

``serve`` runs gunicorn in this process with gevent workers. The app is passed as an import
string and loaded in each worker, after gevent has monkey-patched it. ``say`` and ``listen``
speak plain HTTP with the standard library, so they need nothing beyond click.
"""

from __future__ import annotations

import atexit
import functools
import gc
import ipaddress
import json
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request

import click

from . import __version__

if t.TYPE_CHECKING:
    from flask import Flask
    from gunicorn.workers.base import Worker

DEFAULT_URL = "http://127.0.0.1:8080"

#: Settings for long-lived streams, whatever gunicorn's defaults are.
GUNICORN_SETTINGS: dict[str, t.Any] = {
    "worker_class": "sse_flask.worker.GeventWorker",
    # Each open stream holds one of a worker's connections (gunicorn's default is 1000);
    # room for 10,000 streams and the requests that publish and poll beside them.
    "worker_connections": 20000,
    # Seconds a stopping worker waits for open requests. Streams are closed as soon as the
    # worker is told to stop (see post_worker_init), so this only bounds stragglers.
    "graceful_timeout": 10,
    "keepalive": 5,
    # gunicornc is not used; without this, two servers on one machine share a socket path.
    "control_socket_disable": True,
}


@click.group()
@click.version_option(__version__, prog_name="sse-flask")
def main() -> None:
    """Server-sent events for Flask: run the server, publish, and listen."""


@main.command()
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="gevent worker processes.")
@click.option("--broker", envvar="SSE_BROKER_URL", help="redis:// URL shared by every worker; default in-process.")
@click.option("--app", "app_uri", default="sse_flask.demo:create_app", show_default=True, help="MODULE:FACTORY or MODULE:APP.")
def serve(bind: str, workers: int, broker: str | None, app_uri: str) -> None:
    """Serve the app under gunicorn with gevent workers."""
    if broker:
        os.environ["SSE_BROKER_URL"] = broker
    prepare_metrics_dir()
    _raise_open_files_limit(workers * GUNICORN_SETTINGS["worker_connections"] + 1024)
    _Server(app_uri, {**GUNICORN_SETTINGS, "bind": bind, "workers": workers}).run()


@main.command()
@click.argument("message", required=False)
@click.option("--url", default=DEFAULT_URL, show_default=True, envvar="SSE_URL", help="Where the blueprint is mounted.")
@click.option("--channel", help="Channel to publish on; default 'default'.")
@click.option("--event", help="Event type; default 'message'.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Publish each line read from standard input.")
@click.option("--token", envvar="SSE_PUBLISH_TOKEN", help="Bearer token, if the server requires one.")
@click.option("--broker", help="Publish straight to this redis:// broker instead of over HTTP.")
def say(
    message: str | None, url: str, channel: str | None, event: str | None, from_stdin: bool, token: str | None, broker: str | None
) -> None:
    """Publish MESSAGE, or each line of standard input with --stdin; prints each event's id."""
    if (message is None) == (not from_stdin):
        raise click.UsageError("give either MESSAGE or --stdin")
    publish = _broker_publisher(broker) if broker else functools.partial(_publish_over_http, url, token=token)
    lines = (line.rstrip("\r\n") for line in sys.stdin) if from_stdin else [t.cast(str, message)]
    for line in lines:
        click.echo(publish(line, event=event, channel=channel))


@main.command()
@click.argument("url", default=DEFAULT_URL)
@click.option("--channel", "channels", multiple=True, help="Channel to listen to; may repeat; default 'default'.")
def listen(url: str, channels: tuple[str, ...]) -> None:
    """Print events from URL as they arrive, resuming after a drop.

    Each event prints its data; an event whose type is not 'message' is prefixed with its
    type in brackets.
    """
    stream_url = _events_url(url, channels)
    last_event_id: str | None = None
    delay = 3.0
    while True:
        try:
            for event_type, data, event_id, retry in _events(stream_url, last_event_id):
                if retry is not None:
                    delay = retry / 1000
                if event_id is not None:
                    last_event_id = event_id
                if event_type is not None:
                    click.echo(data if event_type == "message" else f"[{event_type}] {data}")
        except urllib.error.HTTPError as e:
            if e.code < 500:
                raise click.ClickException(f"{stream_url} answered {e.code}: {_error_text(e)}") from None
            retry_after = e.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else delay
            click.echo(f"{stream_url} answered {e.code}: {_error_text(e)}; retrying in {wait:g} s", err=True)
            time.sleep(wait)
            continue
        except OSError as e:
            click.echo(f"connection lost ({e}); reconnecting in {delay:g} s", err=True)
        else:
            click.echo(f"stream ended; reconnecting in {delay:g} s", err=True)
        time.sleep(delay)


class _Server:
    """gunicorn's ``BaseApplication`` around an app import string (built lazily, so that
    ``import sse_flask.cli`` does not import gunicorn)."""

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
    """gunicorn hook: make SIGTERM (a graceful stop or reload) also end this worker's open streams, so
    that its clients reconnect to another worker at once instead of hanging until the
    graceful timeout."""
    import gevent

    from .extension import close_all_streams

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: t.Any) -> None:
        if callable(previous):
            previous(signum, frame)
        gevent.spawn(close_all_streams)

    signal.signal(signal.SIGTERM, on_term)
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


def _raise_open_files_limit(wanted: int) -> None:
    """Each stream holds a file descriptor; raise the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _broker_publisher(broker_url: str) -> t.Callable[..., str]:
    """``publish`` of an app that only holds the broker, so that the same checks apply as
    for a publish from a view (channel, event type, SSE_MAX_DATA_BYTES from the environment)."""
    from flask import Flask

    from .errors import BrokerUnavailable, ConfigError
    from .extension import SSE

    app = Flask("sse_flask.say")
    app.config["SSE_BROKER_URL"] = broker_url
    try:
        sse = SSE(app)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None

    def publish(data: str, *, event: str | None, channel: str | None) -> str:
        try:
            with app.app_context():
                return sse.publish(data, event=event, channel=channel)
        except (ValueError, BrokerUnavailable) as e:
            raise click.ClickException(str(e)) from None

    return publish


def _publish_over_http(url: str, data: str, *, event: str | None, channel: str | None, token: str | None) -> str:
    fields = {"data": data, "event": event, "channel": channel}
    body = json.dumps({key: value for key, value in fields.items() if value is not None}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url.rstrip("/") + "/say", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["id"])
    except urllib.error.HTTPError as e:
        raise click.ClickException(f"{url} answered {e.code}: {_error_text(e)}") from None
    except OSError as e:
        raise click.ClickException(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(error)["error"])
    except (ValueError, KeyError, TypeError):
        return error.reason


def _events_url(url: str, channels: tuple[str, ...]) -> str:
    parts = urllib.parse.urlsplit(url)
    path = parts.path if parts.path.endswith("/events") else parts.path.rstrip("/") + "/events"
    query = urllib.parse.urlencode([("channel", channel) for channel in channels])
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _events(url: str, last_event_id: str | None) -> t.Iterator[tuple[str | None, str, str | None, int | None]]:
    """Parse the stream at ``url`` as the WHATWG standard says a browser does.

    Yields ``(event type, data, last event id, retry)``: a dispatched event has a type;
    a ``retry:`` alone yields a type of ``None``.
    """
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=None) as response:
        data: list[str] = []
        event_type = ""
        event_id = last_event_id
        for line in _lines(response):
            if not line:
                if data:
                    yield event_type or "message", "\n".join(data), event_id, None
                data, event_type = [], ""
                continue
            name, colon, value = line.partition(":")
            if not name and colon:
                continue
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id" and "\0" not in value:
                event_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                yield None, "", event_id, int(value)


def _lines(response: t.IO[bytes]) -> t.Iterator[str]:
    """Lines of ``response``, split on CRLF, CR or LF only, decoded as UTF-8, with a
    leading byte order mark dropped."""
    buffer = b""
    first = True
    while chunk := response.read1(65536):  # type: ignore[attr-defined]
        buffer += chunk
        # Hold a final CR back: the next chunk may start with the LF of the same CRLF.
        end = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        *lines, rest = buffer[:end].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        buffer = rest + buffer[end:]
        for line in lines:
            text = line.decode("utf-8", "replace")
            if first:
                text, first = text.removeprefix("\ufeff"), False
            yield text
