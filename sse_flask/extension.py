"""The Flask extension: settings, broker and authorizer for each app, and ``publish``."""

from __future__ import annotations

import contextlib
import os
import time
import typing as t
import weakref

from flask import Flask, Response, current_app, has_app_context
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .blueprint import blueprint, enable_cors, json_method_not_allowed, warn_open_publish
from .broker import make_broker
from .config import load_settings
from .errors import InvalidChannel
from .jobs import JOB_PREFIX, Job, is_job, start_job
from .jobs import TOKEN_SECONDS as JOB_TOKEN_SECONDS
from .state import AppState, Authorizer, check_channel
from .viewstream import stream_items

__all__ = ["SSE"]


class SSE:
    """Server-sent events for a Flask app: mounts the blueprint and publishes events.

    ::

        sse = SSE(app)          # or: sse = SSE(); sse.init_app(app)
        sse.publish({"order": 7}, event="order", channel="user:42")

    :param app: the app to set up now; otherwise call :meth:`init_app` later.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._authorize: Authorizer | None = None
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the settings, start the broker and mount the blueprint on ``app``.

        The settings are resolved once, here: the default, then ``app.config``, then the
        environment variable of the same name. The keys read are ``SSE_URL_PREFIX``,
        ``SSE_BROKER_URL``, ``SSE_HEARTBEAT``, ``SSE_RETRY_MS``, ``SSE_HISTORY``,
        ``SSE_QUEUE_SIZE``, ``SSE_MAX_DATA_BYTES``, ``SSE_MAX_CONNECTIONS``,
        ``SSE_MAX_STREAMS_PER_ADDRESS``, ``SSE_MAX_STREAM_SECONDS``, ``SSE_PUBLISH_TOKEN``,
        ``SSE_OPEN_PUBLISH``, ``SSE_CORS_ORIGINS``, ``SSE_PRIVATE_PREFIXES`` and
        ``SSE_JOB_RETENTION``; with Redis also ``SSE_REDIS_WAIT_REPLICAS`` (a publish returns
        once that many replicas have it). ``SSE_BROKER_URL`` may be ``redis://``,
        ``rediss://`` (TLS), ``unix://``, or
        ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``
        to follow the primary that those Sentinels name through a failover.

        :raises ConfigError: if a setting has a value that is not allowed.
        :raises RuntimeError: if ``app`` already has an SSE extension.

        .. versionchanged:: 0.2.0
            ``/say`` is closed unless ``SSE_PUBLISH_TOKEN`` or ``SSE_OPEN_PUBLISH`` is set.
        """
        if "sse" in app.extensions:
            raise RuntimeError(
                "this app already has an SSE extension; call init_app(app) once per app"
            )
        settings = load_settings(app.config, os.environ)

        state = AppState(self, settings, make_broker(settings))
        app.extensions["sse"] = state
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        handlers = app.error_handler_spec[None]
        if 405 not in handlers and not {HTTPException, MethodNotAllowed} & set(
            handlers.get(None, {})
        ):
            app.register_error_handler(MethodNotAllowed, json_method_not_allowed)
        if settings.cors_origins:
            enable_cors(app, settings)
        warn_open_publish(app, settings)
        self._apps.add(app)

    def publish(self, data: t.Any, event: str | None = None, channel: str | None = None) -> str:
        """Publish an event to every stream listening on ``channel``; return its id.

        Safe from any thread or greenlet, inside or outside a request. Outside an app
        context, the one app this extension was set up on is used.

        :param data: a string, sent as it is, or any JSON value, sent as compact JSON.
        :param event: the event type; ``None`` means ``message``.
        :param channel: the channel; ``None`` means ``default``.
        :raises ValueError: if the event type is empty or contains CR, LF or NUL, the
            channel name is not allowed, or the data cannot be encoded
            (:class:`~sse_flask.errors.InvalidInput` and its subclasses).
        :raises DataTooLarge: if the encoded data is over ``SSE_MAX_DATA_BYTES``.
        :raises BrokerUnavailable: if the broker could not be reached: nothing was sent.
        """
        return self._state().publish(data, event, channel)

    def stream(self, items: t.Iterable[t.Any]) -> Response:
        """Answer the current request with an event stream of its own: one event per item
        of ``items``, then ``event: done``.

        A :class:`str` is sent as it is, an :class:`~sse_flask.Event` as given, any other
        value as compact JSON; ids are ``1``, ``2``, ... unless an ``Event`` has its own.
        ``items`` runs apart from the writer (a greenlet under gevent, a thread otherwise)
        inside the view's request context, so heartbeats go out while it produces nothing.
        An exception in it sends ``event: error`` with ``{"error": "..."}`` (the traceback
        goes to the log). When the client goes away, ``items`` is closed (``GeneratorExit``
        in a generator) and the request's teardown runs: at once under gevent, at the
        latest at the next heartbeat elsewhere (on threads, once the step running returns).

        ::

            @app.post("/ask")
            def ask():
                return sse.stream(generate_answer(request.get_json()["prompt"]))

        :raises RuntimeError: outside a request.

        .. versionadded:: 0.2.0
        """
        state = self._state()
        return stream_items(items, settings=state.settings, slots=state, fanout=state.views)

    def start_job(self, function: t.Callable[..., t.Any], /, *args: t.Any, **kwargs: t.Any) -> Job:
        """Call ``function(*args, **kwargs)`` apart from the request (a greenlet under
        gevent, a thread otherwise, inside an app context of its own) and publish each item
        it yields to the job's private channel, then ``event: done`` (or ``error``, or
        ``cancelled``).

        Hand :attr:`Job.channel` and :attr:`Job.token` to the page, which opens
        ``/events?channel=<channel>&token=<token>``: the stream starts at the job's first
        event (or after ``Last-Event-ID``) and ends after its last, and a client that
        drops resumes with every event exactly once. The events are kept until
        ``SSE_JOB_RETENTION`` seconds after the job ends, whatever ``SSE_HISTORY`` is.

        ::

            @app.post("/jobs")
            def start():
                job = sse.start_job(generate_answer, request.get_json()["prompt"])
                return {"channel": job.channel, "token": job.token}

        :raises RuntimeError: if the app has no ``SECRET_KEY`` (the token is signed with it).
        :raises BrokerUnavailable: if the broker cannot be reached: the job did not start.

        .. versionadded:: 0.2.0
        """
        app = self._app()
        state = t.cast(AppState, app.extensions["sse"])
        # The token is signed with the app's SECRET_KEY; a new app context only outside
        # one, since leaving it would run the app's teardown in the middle of a request.
        with contextlib.nullcontext() if has_app_context() else app.app_context():
            return start_job(
                function,
                args,
                kwargs,
                app=app,
                broker=state.broker,
                frame=state.frame,
                token=lambda channel: self.subscribe_token(channel, expires_in=JOB_TOKEN_SECONDS),
            )

    def cancel_job(self, channel: str) -> None:
        """Cancel the job of ``channel`` wherever it runs (with the Redis broker, in any
        worker or host): its generator is closed and the job ends with ``cancelled``.
        Nothing happens if it has ended already.

        :raises InvalidChannel: if ``channel`` is not a job's.
        :raises BrokerUnavailable: if the broker cannot be reached.

        .. versionadded:: 0.2.0
        """
        if not is_job(check_channel(channel)):
            raise InvalidChannel(
                f"{channel!r:.140} is not a job's channel (they start with {JOB_PREFIX!r})"
            )
        self._state().broker.cancel_job(channel)

    def authorizer(self, function: Authorizer) -> Authorizer:
        """Register ``function(channel) -> bool``, called in the request context of each
        ``/events`` request for each channel it asks for; ``False`` answers 403.

        It replaces the default, which lets every channel through except those starting
        with one of ``SSE_PRIVATE_PREFIXES``, which need a token from
        :meth:`subscribe_token`.
        """
        self._authorize = function
        return function

    def subscribe_token(self, *channels: str, expires_in: float = 3600) -> str:
        """Sign a token that lets its holder read ``channels`` for ``expires_in`` seconds.

        Mint it in a view for the signed-in user and hand it to the page, which passes it
        as ``/events?token=...`` (EventSource cannot set headers). A stream opened with it
        ends when it expires, so not renewing a token revokes access within its lifetime.
        Signed with the app's ``SECRET_KEY``, which every worker must share.

        :raises InvalidChannel: if a channel name is not allowed.
        :raises RuntimeError: if the app has no ``SECRET_KEY``.
        """
        for channel in channels:
            check_channel(channel)
        return str(
            self._state()
            .token_serializer()
            .dumps({"c": list(channels), "e": time.time() + expires_in})
        )

    def _state(self) -> AppState:
        return t.cast(AppState, self._app().extensions["sse"])

    def _app(self) -> Flask:
        """The current app, or outside an app context the one this extension is set up on."""
        if has_app_context():
            state = current_app.extensions.get("sse")
            if state is None or state.sse is not self:
                raise RuntimeError(
                    "this SSE extension is not set up on the current app; call init_app(app) first"
                )
            return t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        apps = list(self._apps)
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise RuntimeError("this SSE extension has no app; call init_app(app) first")
        raise RuntimeError(
            "this SSE extension serves several apps; publish inside 'with app.app_context():'"
        )
