"""The ``sse-flask`` command: ``serve``, ``say`` and ``listen``.

``serve`` runs gunicorn in this process with gevent workers. The app is passed as an import
string and loaded in each worker, after gevent has monkey-patched it. ``say`` and ``listen``
speak plain HTTP with the standard library (:mod:`sse_flask.client`), so they need nothing
beyond click; everything gunicorn is in :mod:`sse_flask.serving`.
"""

from __future__ import annotations

import os
import sys
import time
import typing as t

import click

from . import __version__
from .client import ClientError, base_url, events_url, publish_over_http, read_events
from .config import cast_setting
from .errors import ConfigError
from .serving import DEFAULT_PORT, ServeError, run

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"

#: Tries of a publish that failed in a way that may mend (the server restarting, a 503).
_PUBLISH_TRIES = 3


class _StartError(click.ClickException):
    """``serve`` cannot start: one line, exit status 2 (as for a bad option)."""

    exit_code = 2


@click.group()
@click.version_option(__version__, prog_name="sse-flask")
def main() -> None:
    """Server-sent events for Flask: run the server, publish, and listen."""


@main.command()
@click.option(
    "--bind", default=f"127.0.0.1:{DEFAULT_PORT}", show_default=True, help="HOST:PORT to listen on."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="gevent worker processes.",
)
@click.option(
    "--broker",
    envvar="SSE_BROKER_URL",
    help="redis:// URL shared by every worker; default in-process.",
)
@click.option(
    "--app",
    "app_uri",
    default="sse_flask.demo:create_app",
    show_default=True,
    help="MODULE:FACTORY or MODULE:APP.",
)
def serve(bind: str, workers: int, broker: str | None, app_uri: str) -> None:
    """Serve the app under gunicorn with gevent workers.

    The app is loaded once before the port is bound, so that a missing module or a bad
    setting stops here, in one line, with the port never taken.
    """
    if broker:
        source = click.get_current_context().get_parameter_source("broker")
        from_env = source == click.core.ParameterSource.ENVIRONMENT
        try:
            cast_setting("SSE_BROKER_URL", broker, "the environment" if from_env else "--broker")
        except ConfigError as e:
            raise _StartError(str(e)) from None
        os.environ["SSE_BROKER_URL"] = broker
    try:
        run(app_uri, bind, workers)
    except ServeError as e:
        raise _StartError(str(e)) from None


@main.command()
@click.argument("message", required=False)
@click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    envvar="SSE_URL",
    help="Where the blueprint is mounted (or HOST:PORT).",
)
@click.option("--channel", help="Channel to publish on; default 'default'.")
@click.option("--event", help="Event type; default 'message'.")
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Publish each line read from standard input."
)
@click.option(
    "--token", envvar="SSE_PUBLISH_TOKEN", help="Bearer token, if the server requires one."
)
@click.option("--broker", help="Publish straight to this redis:// broker instead of over HTTP.")
def say(
    message: str | None,
    url: str,
    channel: str | None,
    event: str | None,
    from_stdin: bool,
    token: str | None,
    broker: str | None,
) -> None:
    """Publish MESSAGE, or each line of standard input with --stdin; prints each event's id.

    A publish that fails in a way that may mend (the server is restarting, or answered 503)
    is tried again, up to three times in all; any other failure stops at once.
    """
    if (message is None) == (not from_stdin):
        raise click.UsageError("give either MESSAGE or --stdin")
    publish = _broker_publisher(broker) if broker else _http_publisher(_url(url, "--url"), token)
    lines = (line.rstrip("\r\n") for line in sys.stdin) if from_stdin else [t.cast(str, message)]
    for line in lines:
        click.echo(publish(line, event=event, channel=channel))


@main.command()
@click.argument("url", default=DEFAULT_URL)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="Channel to listen to; may repeat; default 'default'.",
)
def listen(url: str, channels: tuple[str, ...]) -> None:
    """Print events from URL (or HOST:PORT) as they arrive, resuming after a drop.

    Each event prints its data; an event whose type is not 'message' is prefixed with its
    type in brackets. A failure that waiting may mend (the server down or restarting, a
    5xx) is retried; a 4xx or an answer that is not an event stream stops at once.
    """
    stream_url = events_url(_url(url, "URL"), channels)
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
        except ClientError as e:
            if not e.transient:
                raise click.ClickException(str(e)) from None
            wait = delay if e.retry_after is None else e.retry_after
            click.echo(f"{e}; reconnecting in {wait:g} s", err=True)
            time.sleep(wait)
            continue
        click.echo(f"stream ended; reconnecting in {delay:g} s", err=True)
        time.sleep(delay)


def _url(url: str, param: str) -> str:
    try:
        return base_url(url)
    except ClientError as e:
        raise click.BadParameter(str(e), param_hint=param) from None


def _http_publisher(url: str, token: str | None) -> t.Callable[..., str]:
    """``publish`` over ``url``'s ``/say``, tried again after a failure that may mend."""

    def publish(data: str, *, event: str | None, channel: str | None) -> str:
        tried = 1
        while True:
            try:
                return publish_over_http(url, data, event=event, channel=channel, token=token)
            except ClientError as e:
                if not e.transient or tried == _PUBLISH_TRIES:
                    raise click.ClickException(str(e)) from None
                wait = 1.0 if e.retry_after is None else e.retry_after
                click.echo(f"{e}; trying again in {wait:g} s", err=True)
                time.sleep(wait)
                tried += 1

    return publish


def _broker_publisher(broker_url: str) -> t.Callable[..., str]:
    """``publish`` of an app that only holds the broker, so that the same checks apply as
    for a publish from a view (channel, event type, SSE_MAX_DATA_BYTES from the environment)."""
    from flask import Flask

    from .errors import BrokerUnavailable
    from .extension import SSE

    try:
        cast_setting("SSE_BROKER_URL", broker_url, "--broker")
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None
    app = Flask("sse_flask.say")
    app.config["SSE_BROKER_URL"] = broker_url
    try:
        sse = SSE(app)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None

    def publish(data: str, *, event: str | None, channel: str | None) -> str:
        try:
            with app.app_context():
                return sse.publish(data, event=event, channel=channel)
        except (ValueError, BrokerUnavailable) as e:
            raise click.ClickException(str(e)) from None

    return publish
