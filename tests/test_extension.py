"""The Flask extension, :class:`sse_flask.SSE`: set-up, ``publish`` and its checks, the
authorizer, and the routes through Flask's test client.

Contract lines pinned: "`sse = SSE(app)` # or: `sse = SSE(); sse.init_app(app)`", "The
blueprint is named `sse`", "`sse.publish(data, event=None, channel=None) -> str` returns the
event id; safe from any thread ... inside or outside a request", the channel name rule
("`A-Z a-z 0-9 _ . : @ -`, 1 to 128 characters"), "data larger than `SSE_MAX_DATA_BYTES`
(encoded UTF-8)", the routes `/say`, `/stats`, `/healthz` and the stream's headers ("No
`Connection` header"), and "the environment wins" over app.config.
"""

from __future__ import annotations

import json
import threading
import typing as t

import pytest
from flask import Flask, request, url_for
from werkzeug.test import TestResponse

from sse_flask import SSE, ConfigError, DataTooLarge, InvalidChannel
from sse_flask.broker import Subscription
from sse_flask.config import DEFAULTS


@pytest.fixture(autouse=True)
def _no_sse_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test's app.config only, whatever the shell exported."""
    for key in DEFAULTS:
        monkeypatch.delenv(key, raising=False)


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def subscribe(app: Flask, channel: str = "default") -> Subscription:
    """A subscription to ``channel`` on the app's broker (its state is ``app.extensions["sse"]``)."""
    return t.cast(
        Subscription, app.extensions["sse"].broker.subscribe([channel], None, queue_size=1000)
    )


def received(subscription: Subscription) -> list[tuple[str, str, str]]:
    """(id, event type, data) of every frame pending (the in-process broker delivers at once)."""
    events = []
    for block in subscription.wait(0).decode().split("\n\n")[:-1]:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        events.append(
            (fields["id"][0], fields.get("event", ["message"])[0], "\n".join(fields["data"]))
        )
    return events


# --- set-up ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["SSE(app)", "init_app"])
def test_setup_styles(style: str) -> None:
    """Both set-up styles store the state in app.extensions["sse"] and mount the blueprint named "sse"."""
    app = make_app()
    if style == "SSE(app)":
        sse = SSE(app)
    else:
        sse = SSE()
        sse.init_app(app)
    assert app.extensions["sse"].sse is sse
    assert "sse" in app.blueprints
    assert not hasattr(sse, "app"), "per-app state goes in app.extensions, not on the extension"
    rules = {
        rule.endpoint: rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("sse.")
    }
    assert {
        endpoint: rules[endpoint]
        for endpoint in ("sse.events", "sse.say", "sse.stats", "sse.healthz")
    } == {
        "sse.events": "/events",
        "sse.say": "/say",
        "sse.stats": "/stats",
        "sse.healthz": "/healthz",
    }


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("/sse", "/sse/events"), ("/api/v1/live/", "/api/v1/live/events"), ("", "/events")],
)
def test_url_prefix(prefix: str, expected: str) -> None:
    """The blueprint is mounted at SSE_URL_PREFIX."""
    app = make_app(SSE_URL_PREFIX=prefix)
    SSE(app)
    with app.test_request_context():
        assert url_for("sse.events") == expected
        assert url_for("sse.say") == expected.replace("events", "say")
    assert app.test_client().get(expected.replace("events", "healthz")).status_code == 200


def test_init_app_twice_raises() -> None:
    """A second init_app on the same app, by the same or another SSE, names the fix."""
    app = make_app()
    sse = SSE(app)
    with pytest.raises(
        RuntimeError, match=r"already has an SSE extension; call init_app\(app\) once per app"
    ):
        sse.init_app(app)
    with pytest.raises(RuntimeError, match=r"call init_app\(app\) once per app"):
        SSE(app)


def test_bad_setting_fails_at_setup() -> None:
    """A bad SSE_* value fails init_app with the ConfigError naming key and source."""
    with pytest.raises(
        ConfigError, match=r"^SSE_HEARTBEAT \(from app.config\) must be a number of seconds"
    ):
        SSE(make_app(SSE_HEARTBEAT="soon"))


def test_environment_beats_app_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SSE_* environment variable overrides app.config, at init_app."""
    monkeypatch.setenv("SSE_URL_PREFIX", "/from-env")
    monkeypatch.setenv("SSE_MAX_DATA_BYTES", "3")
    app = make_app(SSE_URL_PREFIX="/from-config", SSE_MAX_DATA_BYTES=1000, SSE_RETRY_MS=1500)
    sse = SSE(app)
    with app.test_request_context():
        assert url_for("sse.events") == "/from-env/events"
    sse.publish("abc")
    with pytest.raises(DataTooLarge):
        sse.publish("abcd")
    assert app.extensions["sse"].settings.retry_ms == 1500, (
        "app.config still counts where the environment is silent"
    )


# --- publish ----------------------------------------------------------------------------


@pytest.fixture
def app() -> Flask:
    """An app that opts in to publishes over HTTP without a token, for the /say tests."""
    return make_app(SSE_OPEN_PUBLISH=True)


@pytest.fixture
def sse(app: Flask) -> SSE:
    return SSE(app)


@pytest.fixture
def limited() -> tuple[Flask, SSE]:
    """An app whose data may be at most 10 bytes."""
    app = make_app(SSE_MAX_DATA_BYTES=10)
    return app, SSE(app)


def test_publish_returns_the_id(app: Flask, sse: SSE) -> None:
    """publish returns the id the subscribers receive, with type and data; channel defaults to "default"."""
    default, news = subscribe(app), subscribe(app, "news")
    first = sse.publish("hi")
    second = sse.publish({"n": 1}, event="update", channel="news")
    assert isinstance(first, str) and first != second
    assert received(default) == [(first, "message", "hi")]
    assert received(news) == [(second, "update", '{"n":1}')]


@pytest.mark.parametrize(
    "channel",
    ["", " ", "a b", "a/b", "a\nb", "caf\xe9", "x" * 129, "#hash", "a,b", "a*", 5, b"bytes", ["a"]],
    ids=repr,
)
def test_publish_refuses_bad_channel(sse: SSE, channel: t.Any) -> None:
    """A channel outside A-Z a-z 0-9 _ . : @ -, 1 to 128 long, raises InvalidChannel, a ValueError."""
    with pytest.raises(
        InvalidChannel, match=r"channel must be 1 to 128 characters of A-Z a-z 0-9 _ \. : @ -, got "
    ) as info:
        sse.publish("x", channel=channel)
    assert isinstance(info.value, ValueError)
    assert repr(channel)[:20] in str(info.value)


@pytest.mark.parametrize(
    "channel", ["x", "x" * 128, "AZaz09_.:@-", "user:42", "team@example.com", "a.b-c_d"]
)
def test_publish_accepts_good_channel(app: Flask, sse: SSE, channel: str) -> None:
    """Every allowed character, and the full 128 characters, make a channel name."""
    subscription = subscribe(app, channel)
    event_id = sse.publish("x", channel=channel)
    assert received(subscription) == [(event_id, "message", "x")]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("", r"event type must not be empty"),
        ("a\nb", r"event type must not contain CR, LF or NUL: 'a\\nb'"),
        ("a\rb", r"event type must not contain CR, LF or NUL"),
        ("a\x00b", r"event type must not contain CR, LF or NUL"),
    ],
)
def test_publish_refuses_bad_event_type(app: Flask, sse: SSE, event: str, message: str) -> None:
    """An empty event type, or one with CR, LF or NUL, raises ValueError and publishes nothing."""
    subscription = subscribe(app)
    with pytest.raises(ValueError, match=message):
        sse.publish("x", event=event)
    assert received(subscription) == []
    assert app.extensions["sse"].broker.stats()["published"] == 0


@pytest.mark.parametrize(
    ("data", "size"),
    [
        ("x" * 10, 10),
        ("\xe9" * 5, 10),  # two bytes each
        ("\u20ac" * 3 + "x", 10),  # three bytes each
        ("\U0001f600" * 2 + "xx", 10),  # four bytes each
        ({"a": "xx"}, 10),  # '{"a":"xx"}'
        ([1, 2, 3, 4], 9),  # "[1,2,3,4]"
        ("", 0),
    ],
    ids=repr,
)
def test_publish_at_the_size_limit(limited: tuple[Flask, SSE], data: t.Any, size: int) -> None:
    """Data up to SSE_MAX_DATA_BYTES encoded bytes (10 here) is accepted."""
    app, sse = limited
    subscription = subscribe(app)
    event_id = sse.publish(data)
    assert [event[0] for event in received(subscription)] == [event_id]


@pytest.mark.parametrize(
    ("data", "size"),
    [
        ("x" * 11, 11),
        ("\xe9" * 5 + "x", 11),
        ("\u20ac" * 4, 12),  # 4 characters, 12 bytes
        ("\U0001f600" * 3, 12),  # 3 characters, 12 bytes
        ({"a": "xxx"}, 11),
        ("\xe9" * 6, 12),  # 6 characters, under a limit counted in characters
    ],
    ids=repr,
)
def test_publish_over_the_size_limit(limited: tuple[Flask, SSE], data: t.Any, size: int) -> None:
    """One encoded byte over SSE_MAX_DATA_BYTES raises DataTooLarge, saying the size and the limit."""
    app, sse = limited
    subscription = subscribe(app)
    with pytest.raises(
        DataTooLarge,
        match=rf"^data is {size} bytes encoded as UTF-8, over the limit of 10 \(SSE_MAX_DATA_BYTES\)$",
    ) as info:
        sse.publish(data)
    assert isinstance(info.value, ValueError)
    assert received(subscription) == []


def test_publish_refuses_unencodable_data(sse: SSE) -> None:
    """Data that is neither a string nor JSON raises ValueError."""
    with pytest.raises(ValueError, match="data must be a string or a JSON value"):
        sse.publish(object())
    with pytest.raises(ValueError, match="data must be valid Unicode text"):
        sse.publish("\ud800")


def test_publish_outside_app_context_with_one_app(app: Flask, sse: SSE) -> None:
    """Outside any app context, the one app the extension is set up on is used."""
    subscription = subscribe(app)
    event_id = sse.publish("from a script")
    assert received(subscription) == [(event_id, "message", "from a script")]


def test_publish_inside_a_request(app: Flask, sse: SSE) -> None:
    """publish works from a view of the app."""

    @app.post("/ship")
    def ship() -> dict[str, str]:
        return {"id": sse.publish({"shipped": True}, event="order", channel="orders")}

    subscription = subscribe(app, "orders")
    response = app.test_client().post("/ship")
    assert received(subscription) == [(response.json["id"], "order", '{"shipped":true}')]  # type: ignore[index]


def test_publish_with_two_apps() -> None:
    """With several apps, publish asks for an app context, and inside one uses that app."""
    sse = SSE()
    first, second = make_app(), make_app()
    sse.init_app(first)
    sse.init_app(second)
    with pytest.raises(
        RuntimeError, match=r"several apps; publish inside 'with app.app_context\(\):'"
    ):
        sse.publish("x")
    on_first, on_second = subscribe(first), subscribe(second)
    with second.app_context():
        event_id = sse.publish("to the second")
    assert received(on_second) == [(event_id, "message", "to the second")]
    assert received(on_first) == []


def test_publish_without_app() -> None:
    """An extension never set up tells the user to call init_app(app) first."""
    with pytest.raises(RuntimeError, match=r"call init_app\(app\) first"):
        SSE().publish("x")


def test_publish_in_another_apps_context(sse: SSE) -> None:
    """Inside the context of an app this extension is not set up on, the message names the fix."""
    with (
        make_app().app_context(),
        pytest.raises(
            RuntimeError, match=r"not set up on the current app; call init_app\(app\) first"
        ),
    ):
        sse.publish("x")


def test_publish_from_many_threads(app: Flask, sse: SSE) -> None:
    """Many OS threads publishing at once: every event is published once, with its own id."""
    threads_count, per_thread = 8, 100
    subscription = subscribe(app)
    ids: list[list[str]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_count)

    def work(n: int) -> None:
        try:
            barrier.wait()
            ids[n].extend(sse.publish(f"{n}:{i}") for i in range(per_thread))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    events = received(subscription)
    assert len(events) == threads_count * per_thread == len({event[0] for event in events})
    for n in range(threads_count):
        assert [event[0] for event in events if event[2].startswith(f"{n}:")] == ids[n]
    assert app.extensions["sse"].broker.stats()["published"] == threads_count * per_thread


# --- authorizer -------------------------------------------------------------------------


def test_authorizer() -> None:
    """The authorizer decorator returns the function, is asked per channel in the request, and refuses with 403."""
    app = make_app()
    sse = SSE(app)
    asked: list[tuple[str, str | None]] = []

    def may_listen(channel: str) -> bool:
        asked.append((channel, request.args.get("user")))
        return not channel.startswith("user:") or channel == f"user:{request.args.get('user')}"

    assert sse.authorizer(may_listen) is may_listen, "usable as a decorator"
    client = app.test_client()
    refused = client.get("/events?channel=public&channel=user:2&user=1")
    assert refused.status_code == 403
    assert refused.json == {"error": "you may not listen to channel 'user:2'"}
    assert asked == [("public", "1"), ("user:2", "1")]
    with client.get("/events?channel=public&channel=user:1&user=1", buffered=False) as allowed:
        assert allowed.status_code == 200
    assert app.extensions["sse"].broker.stats()["consumers"] == 0


def test_no_authorizer_allows_every_public_channel() -> None:
    """Without an authorizer, only SSE_PRIVATE_PREFIXES channels need a token (tests/test_tokens.py)."""
    app = make_app()
    SSE(app)
    with app.test_client().get("/events?channel=room:1", buffered=False) as response:
        assert response.status_code == 200
    with app.test_client().get("/events?channel=user:1", buffered=False) as response:
        assert response.status_code == 403


# --- routes -------------------------------------------------------------------------------


@pytest.fixture
def client(app: Flask, sse: SSE) -> t.Any:
    return app.test_client()


def test_say_get(app: Flask, client: t.Any) -> None:
    """GET /say?msg= publishes and answers the id, channel and type."""
    subscription = subscribe(app)
    response = client.get("/say?msg=hi")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert set(response.json) == {"id", "channel", "event"}
    assert response.json["channel"] == "default" and response.json["event"] == "message"
    assert received(subscription) == [(response.json["id"], "message", "hi")]


def test_say_get_fields(app: Flask, client: t.Any) -> None:
    """GET /say takes data (for msg), channel and event."""
    subscription = subscribe(app, "news")
    response = client.get("/say?data=headline&channel=news&event=breaking")
    assert response.json == {"id": response.json["id"], "channel": "news", "event": "breaking"}
    assert received(subscription) == [(response.json["id"], "breaking", "headline")]


def test_say_get_without_message(app: Flask, client: t.Any) -> None:
    """GET /say with no msg publishes an auto-generated ``hello N``."""
    subscription = subscribe(app)
    client.get("/say")
    client.get("/say")
    (first, second) = [event[2] for event in received(subscription)]
    assert first.startswith("hello ") and second.startswith("hello ")
    assert int(second.split()[1]) == int(first.split()[1]) + 1


def test_say_post_json(app: Flask, client: t.Any) -> None:
    """POST /say with JSON publishes any JSON data, compact, with type and channel."""
    subscription = subscribe(app, "orders")
    response = client.post(
        "/say", json={"data": {"order": 7}, "event": "order", "channel": "orders"}
    )
    assert response.status_code == 200
    assert response.json == {"id": response.json["id"], "channel": "orders", "event": "order"}
    assert received(subscription) == [(response.json["id"], "order", '{"order":7}')]


def test_say_post_form(app: Flask, client: t.Any) -> None:
    """POST /say with form fields publishes the same way."""
    subscription = subscribe(app, "chat")
    response = client.post("/say", data={"data": "hi there", "event": "msg", "channel": "chat"})
    assert response.status_code == 200
    assert received(subscription) == [(response.json["id"], "msg", "hi there")]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"query_string": {"msg": "x", "channel": "bad channel"}}, 400),
        ({"query_string": {"msg": "x", "event": ""}}, 400),
        ({"json": {"data": "x", "event": "a\nb"}}, 400),
        ({"json": {"data": "x" * 65537}}, 413),
        ({"data": "{not json", "content_type": "application/json"}, 400),
    ],
)
def test_say_errors_are_json(client: t.Any, kwargs: dict[str, t.Any], status: int) -> None:
    """Refused publishes answer JSON {"error": ...} with the contract's status."""
    method = client.get if "query_string" in kwargs else client.post
    response = method("/say", **kwargs)
    assert response.status_code == status
    assert set(response.json) == {"error"} and response.json["error"]


def test_stats(app: Flask, client: t.Any) -> None:
    """/stats answers this process's figures."""
    client.get("/say?msg=1")
    with client.get("/events?channel=a&channel=b", buffered=False):
        stats = client.get("/stats").json
        assert stats == {
            "consumers": 1,
            "channels": {"a": 1, "b": 1},
            "published": 1,
            "dropped": 0,
            "backend": "memory",
        }
    assert client.get("/stats").json["consumers"] == 0


def test_healthz(client: t.Any) -> None:
    """/healthz answers 200 {"status": "ok"} with the in-process broker."""
    response = client.get("/healthz")
    assert (response.status_code, response.json) == (200, {"status": "ok"})


def test_events_headers(app: Flask, client: t.Any) -> None:
    """The stream's headers: event-stream in UTF-8, no caching, no nginx buffering, no Connection."""
    response: TestResponse = client.get("/events", buffered=False)
    try:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Connection" not in response.headers
        assert "Content-Length" not in response.headers
    finally:
        response.close()
    assert app.extensions["sse"].broker.stats()["consumers"] == 0, (
        "closing the response ends the subscription"
    )


def test_events_stream_through_the_test_client(app: Flask, sse: SSE, client: t.Any) -> None:
    """An /events response opens with retry:, then carries what publish sends, with its id."""
    response: TestResponse = client.get("/events?channel=news", buffered=False)
    try:
        chunks = iter(response.response)
        assert next(chunks) == b"retry: 3000\n"
        event_id = sse.publish({"x": 1}, event="update", channel="news")
        assert (
            next(chunks)
            == f"id: {event_id}\nevent: update\ndata: {json.dumps({'x': 1}, separators=(',', ':'))}\n\n".encode()
        )
    finally:
        response.close()
    assert client.get("/stats").json["consumers"] == 0


def test_events_resume_with_last_event_id(app: Flask, sse: SSE, client: t.Any) -> None:
    """Last-Event-ID (or ?lastEventId=) replays what followed, after retry:."""
    first = sse.publish("one")
    second = sse.publish("two")
    for kwargs in ({"headers": {"Last-Event-ID": first}}, {"query_string": {"lastEventId": first}}):
        response: TestResponse = client.get("/events", buffered=False, **kwargs)
        try:
            assert (
                next(iter(response.response))
                == f"retry: 3000\nid: {second}\ndata: two\n\n".encode()
            )
        finally:
            response.close()
