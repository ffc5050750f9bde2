"""The ``sse-flask`` command: ``serve``, ``say`` and ``listen``.

``serve`` runs gunicorn in this process with gevent workers. The app is passed as an import
string and loaded in each worker, after gevent has monkey-patched it. ``say`` and ``listen``
speak plain HTTP with the standard library (:mod:`sse_flask.client`), so they need nothing
beyond click; everything gunicorn is in :mod:`sse_flask.serving`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import typing as t
import urllib.error

import click

from . import __version__
from .client import error_text, events_url, publish_over_http, read_events
from .serving import GUNICORN_SETTINGS, Server, prepare_metrics_dir, raise_open_files_limit

DEFAULT_URL = "http://127.0.0.1:8080"


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
    raise_open_files_limit(workers * GUNICORN_SETTINGS["worker_connections"] + 1024)
    Server(app_uri, {**GUNICORN_SETTINGS, "bind": bind, "workers": workers}).run()


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
    publish = _broker_publisher(broker) if broker else functools.partial(publish_over_http, url, token=token)
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
    stream_url = events_url(url, channels)
    last_event_id: str | None = None
    delay = 3.0
    while True:
        try:
            for event_type, data, event_id, retry in read_events(stream_url, last_event_id):
                if retry is not None:
                    delay = retry / 1000
                if event_id is not None:
                    last_event_id = event_id
                if event_type is not None:
                    click.echo(data if event_type == "message" else f"[{event_type}] {data}")
        except urllib.error.HTTPError as e:
            if e.code < 500:
                raise click.ClickException(f"{stream_url} answered {e.code}: {error_text(e)}") from None
            retry_after = e.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else delay
            click.echo(f"{stream_url} answered {e.code}: {error_text(e)}; retrying in {wait:g} s", err=True)
            time.sleep(wait)
            continue
        except OSError as e:
            click.echo(f"connection lost ({e}); reconnecting in {delay:g} s", err=True)
        else:
            click.echo(f"stream ended; reconnecting in {delay:g} s", err=True)
        time.sleep(delay)


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


