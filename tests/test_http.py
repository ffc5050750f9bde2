"""The HTTP surface against a real gunicorn with a gevent worker: every error answer, the
limits, ``/stats``, ``/healthz`` and ``GET /say``.

Each error must be JSON ``{"error": ...}`` with the contract's status, no traceback, and must
leave the server serving everyone else: the demo server keeps one stream open through all its
error cases (``witness``), and the last test checks that it still receives what is published
then, and nothing that was refused before (the refused publishes aim at its channel).

Two servers, one per class: the demo app with default settings, and ``apps.http_private`` (an
authorizer refusing ``secret*``) with a publish token and stream limits.
"""

from __future__ import annotations

import json
import re
import socket
import time
import typing as t

import httpx
import httpx_sse
import pytest
import requests
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

TOKEN = "tok-3f9a"
WITNESS = "witness"
MAX_DATA = 65536  # the default SSE_MAX_DATA_BYTES, which the demo server keeps

BAD_CHANNELS = [
    pytest.param("a b", id="space"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param("", id="empty"),
    pytest.param("café", id="unicode-latin"),
    pytest.param("频道", id="unicode-cjk"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a#b", id="hash"),
]
GOOD_CHANNELS = [
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-",
    "x" * 128,
    "-",
    "@",
    ".",
    "room:42",
    "a.b-c_d@e:f",
]
BAD_EVENT_TYPES = [
    pytest.param("", id="empty"),
    pytest.param("a\nb", id="LF"),
    pytest.param("a\rb", id="CR"),
    pytest.param("a\x00b", id="NUL"),
    pytest.param("\r\n", id="CRLF"),
    pytest.param("x\n\ndata: forged", id="forged-frame"),
]
WRONG_TYPES = [
    pytest.param(5, id="number"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(["a"], id="list"),
    pytest.param({"a": 1}, id="object"),
]


def error_of(response: requests.Response | httpx.Response, status: int) -> str:
    """Check that ``response`` is the contract's JSON error with ``status``; return its text."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text[:500]}"
    )
    assert response.headers["Content-Type"] == "application/json", response.headers
    assert "Traceback" not in response.text
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str) and len(body["error"]) >= 10, body
    return str(body["error"])


def request(method: str, server: Server, path: str, **kwargs: t.Any) -> requests.Response:
    """One request on its own connection, closed by the server once answered, so that a
    response kept alive by a failing test's traceback does not hold the worker at shutdown."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}
    return requests.request(method, server.url + path, headers=headers, timeout=10, **kwargs)


def get(server: Server, path: str, **kwargs: t.Any) -> requests.Response:
    return request("GET", server, path, **kwargs)


def post(server: Server, path: str, **kwargs: t.Any) -> requests.Response:
    return request("POST", server, path, **kwargs)


def post_json(server: Server, body: str | bytes) -> requests.Response:
    """POST ``body`` to /say as it is, labelled as JSON."""
    return post(server, "/say", data=body, headers={"Content-Type": "application/json"})


def wait_for_streams(server: Server, count: int) -> None:
    """Wait until the worker counts exactly ``count`` open streams (closing is asynchronous)."""
    wait_until(
        lambda: server.stats()["consumers"] == count, 15, f"{count} open streams on {server.url}"
    )


# ---------------------------------------------------------------------------------------------
# The demo app, default settings
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def demo(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    server = Server.serve([], {}, tmp_path_factory.mktemp("http-demo") / "gunicorn.log", 1)
    yield server
    server.stop()


@pytest.fixture(scope="class")
def witness(demo: Server) -> t.Iterator[StreamClient]:
    """One stream open on the demo server through every test of :class:`TestDemo`."""
    client = StreamClient(demo.url, channels=[WITNESS])
    assert client.response.status_code == 200
    yield client
    client.close()


@pytest.mark.usefixtures("witness")
class TestDemo:
    # -- 400: channel names ---------------------------------------------------------------

    @pytest.mark.parametrize("name", BAD_CHANNELS)
    def test_invalid_channel_on_events_is_400(self, demo: Server, name: str) -> None:
        message = error_of(get(demo, "/events", params={"channel": name}), 400)
        assert "channel" in message and "A-Z a-z 0-9 _ . : @ -" in message and "128" in message
        assert repr(name) in message, "the error quotes the name it refuses"

    @pytest.mark.parametrize("name", BAD_CHANNELS)
    def test_invalid_channel_on_say_is_400(self, demo: Server, name: str) -> None:
        for response in (
            get(demo, "/say", params={"msg": "x", "channel": name}),
            post(demo, "/say", json={"data": "x", "channel": name}),
            post(demo, "/say", data={"data": "x", "channel": name}),
        ):
            message = error_of(response, 400)
            assert "channel" in message and repr(name) in message

    def test_one_invalid_channel_among_valid_ones_refuses_the_stream(self, demo: Server) -> None:
        response = get(demo, "/events", params=[("channel", "fine"), ("channel", "not fine")])
        assert "'not fine'" in error_of(response, 400)

    def test_edge_channel_names_are_accepted(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url, channels=GOOD_CHANNELS)
        assert listener.response.status_code == 200
        expected = []
        for name in GOOD_CHANNELS:
            posted = demo.say(f"post {name}", channel=name)
            got = get(demo, "/say", params={"msg": f"get {name}", "channel": name})
            assert got.status_code == 200, got.text
            expected += [(posted, f"post {name}"), (got.json()["id"], f"get {name}")]
        assert [(e.id, e.data) for e in listener.take(len(expected))] == expected

    # -- 400: event types -----------------------------------------------------------------

    @pytest.mark.parametrize("query", ["", "%0a", "a%0ab", "a%0db", "a%00b", "%0d%0a"])
    def test_bad_event_type_in_query_is_400(self, demo: Server, query: str) -> None:
        response = get(demo, f"/say?msg=x&channel={WITNESS}&event={query}")
        message = error_of(response, 400)
        assert "event type" in message
        assert ("empty" in message) if not query else ("CR, LF or NUL" in message)

    @pytest.mark.parametrize("event", BAD_EVENT_TYPES)
    def test_bad_event_type_in_json_is_400(self, demo: Server, event: str) -> None:
        message = error_of(
            post(demo, "/say", json={"data": "x", "event": event, "channel": WITNESS}), 400
        )
        assert "event type" in message
        if event:
            assert "CR, LF or NUL" in message and repr(event)[:20] in message

    @pytest.mark.parametrize("event", BAD_EVENT_TYPES)
    def test_bad_event_type_in_form_is_400(self, demo: Server, event: str) -> None:
        assert "event type" in error_of(
            post(demo, "/say", data={"data": "x", "event": event, "channel": WITNESS}), 400
        )

    # -- 400: bodies that are not what /say takes -----------------------------------------

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param("{bad", id="unquoted-key"),
            pytest.param('{"data": "x",}', id="trailing-comma"),
            pytest.param('{"data": "x"} {"data": "y"}', id="two-values"),
            pytest.param("", id="empty-body"),
            pytest.param("{'data': 'x'}", id="single-quotes"),
            pytest.param('{"data": "x', id="truncated"),
        ],
    )
    def test_malformed_json_is_400(self, demo: Server, body: str) -> None:
        assert "not valid JSON" in error_of(post_json(demo, body), 400)

    @pytest.mark.parametrize("body", ["[1, 2]", '"hi"', "null", "42", "true"])
    def test_json_that_is_not_an_object_is_400(self, demo: Server, body: str) -> None:
        assert "must be an object" in error_of(post_json(demo, body), 400)

    @pytest.mark.parametrize("body", ["{}", '{"event": "x"}', '{"msg": "x"}', '{"Data": "x"}'])
    def test_json_without_data_is_400(self, demo: Server, body: str) -> None:
        assert "'data'" in error_of(post_json(demo, body), 400)

    @pytest.mark.parametrize("field", ["event", "channel"])
    @pytest.mark.parametrize("value", WRONG_TYPES)
    def test_field_of_the_wrong_type_is_400(self, demo: Server, field: str, value: t.Any) -> None:
        fields = {"data": "x", "channel": WITNESS, field: value}
        message = error_of(post(demo, "/say", json=fields), 400)
        assert repr(field) in message and "must be a string" in message

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param("[" * 100_000, id="100000-arrays"),
            pytest.param('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}", id="data-100000-deep"),
            pytest.param('{"a":' * 50_000 + "1" + "}" * 50_000, id="50000-objects"),
        ],
    )
    def test_deeply_nested_json_is_400(self, demo: Server, body: str) -> None:
        assert "JSON" in error_of(post_json(demo, body), 400)

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b'{"data": "\xff\xfe"}', id="ff-fe"),
            pytest.param(b'{"data": "\xc3"}', id="truncated-sequence"),
            pytest.param(b'{"data": "\xed\xa0\x80"}', id="encoded-surrogate"),
            pytest.param(b'{"data": "\xc0\xaf"}', id="overlong"),
        ],
    )
    def test_invalid_utf8_json_body_is_400(self, demo: Server, body: bytes) -> None:
        message = error_of(post_json(demo, body), 400)
        # json.loads decodes bytes with surrogatepass, so an encoded surrogate is caught as data.
        assert "JSON" in message or "UTF-8" in message.upper() or "Unicode" in message

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param('{"channel": "witness", "data": "\\ud800"}', id="lone-high"),
            pytest.param('{"channel": "witness", "data": "ok \\udfff"}', id="lone-low"),
            pytest.param('{"channel": "witness", "data": ["\\ud800"]}', id="in-a-list"),
            pytest.param('{"channel": "witness", "data": {"\\ud800": 1}}', id="in-a-key"),
        ],
    )
    def test_lone_surrogate_in_data_is_400(self, demo: Server, body: str) -> None:
        message = error_of(post_json(demo, body), 400)
        assert "data" in message and "Unicode" in message

    def test_lone_surrogate_in_event_type_is_400_naming_the_field(self, demo: Server) -> None:
        message = error_of(
            post_json(demo, '{"data": "x", "event": "\\ud800", "channel": "witness"}'), 400
        )
        assert "event" in message, (
            f"the error should say the event type is what is wrong: {message!r}"
        )

    def test_nan_data_is_400(self, demo: Server) -> None:
        # Python's json accepts NaN, but it is not JSON and cannot be sent as JSON text.
        assert "data" in error_of(post_json(demo, '{"data": NaN, "channel": "witness"}'), 400)

    def test_form_fields_publish(self, demo: Server, stream: t.Callable[..., StreamClient]) -> None:
        listener = stream(demo.url, channels=["form-ch"])
        response = post(
            demo, "/say", data={"data": "from a form", "event": "note", "channel": "form-ch"}
        )
        assert response.status_code == 200, response.text
        (event,) = listener.take(1)
        assert (event.id, event.event, event.data) == (response.json()["id"], "note", "from a form")
        multipart = post(
            demo, "/say", files={"data": (None, "multipart"), "channel": (None, "form-ch")}
        )
        assert multipart.status_code == 200, multipart.text
        assert listener.take(1)[0].data == "multipart"

    @pytest.mark.parametrize(
        "form",
        [
            pytest.param({"event": "x", "channel": WITNESS}, id="fields-but-no-data"),
            pytest.param({}, id="empty-body"),
            pytest.param({"date": "x"}, id="misspelt"),
        ],
    )
    def test_form_without_data_is_400(self, demo: Server, form: dict[str, str]) -> None:
        assert "'data'" in error_of(post(demo, "/say", data=form), 400)

    # -- 413 ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("é" * (MAX_DATA // 2), id="2-byte"),
            pytest.param("€" * (MAX_DATA // 3) + "a", id="3-byte"),
            pytest.param("😀" * (MAX_DATA // 4), id="4-byte"),
            pytest.param("a" * MAX_DATA, id="ascii"),
        ],
    )
    def test_data_at_the_limit_is_published_and_one_byte_more_is_413(
        self, demo: Server, stream: t.Callable[..., StreamClient], text: str
    ) -> None:
        assert len(text.encode()) == MAX_DATA
        listener = stream(demo.url, channels=["big"])
        event_id = demo.say(text, channel="big")
        (event,) = listener.take(1)
        assert (event.id, event.data) == (event_id, text)
        for over in (text + "a", text + "é"):
            size = len(over.encode())
            assert size > MAX_DATA
            for response in (
                post(demo, "/say", json={"data": over, "channel": WITNESS}),
                post(demo, "/say", data={"data": over, "channel": WITNESS}),
            ):
                message = error_of(response, 413)
                assert (
                    "SSE_MAX_DATA_BYTES" in message
                    and str(size) in message
                    and str(MAX_DATA) in message
                )

    def test_size_counts_utf8_bytes_not_characters(self, demo: Server) -> None:
        text = "é" * (MAX_DATA // 2 + 1)  # far fewer characters than the limit, one byte pair over
        assert len(text) < MAX_DATA
        assert "SSE_MAX_DATA_BYTES" in error_of(
            post(demo, "/say", json={"data": text, "channel": WITNESS}), 413
        )

    def test_json_data_is_measured_as_its_compact_text(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url, channels=["big"])
        at_limit = ["a" * (MAX_DATA - 4)]  # ["aaa…"] is 4 bytes more
        event_id = demo.say(at_limit, channel="big")
        (event,) = listener.take(1)
        assert (event.id, json.loads(event.data)) == (event_id, at_limit)
        assert len(event.data) == MAX_DATA
        error_of(post(demo, "/say", json={"data": ["a" * (MAX_DATA - 3)], "channel": WITNESS}), 413)

    @pytest.mark.parametrize(
        "content_type",
        ["application/json", "application/x-www-form-urlencoded", None],
    )
    def test_body_far_over_the_limit_is_413_quickly(
        self, demo: Server, content_type: str | None
    ) -> None:
        started = time.monotonic()
        headers = {"Content-Type": content_type} if content_type else {}
        response = post(demo, "/say", data=b"x" * 10_000_000, headers=headers)
        error_of(response, 413)
        assert time.monotonic() - started < 8

    def test_body_far_over_the_limit_says_which_limit(self, demo: Server) -> None:
        message = error_of(post(demo, "/say", json={"data": "x" * 10_000_000}), 413)
        assert "SSE_MAX_DATA_BYTES" in message, (
            f"the error should say which limit applies: {message!r}"
        )

    def test_body_far_over_the_limit_is_refused_before_it_is_sent(self, demo: Server) -> None:
        with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as sock:
            sock.sendall(
                b"POST /say HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000000\r\nConnection: close\r\n\r\n"
                + b'{"data": "'
                + b"x" * 1000
            )
            received = b""
            while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {received!r}"
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert list(json.loads(body)) == ["error"]

    # -- 405, 404 -------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("method", "path"),
        [("DELETE", "/say"), ("PUT", "/say"), ("POST", "/events"), ("DELETE", "/stats")],
    )
    def test_wrong_method_is_405_json_with_allow(
        self, demo: Server, method: str, path: str
    ) -> None:
        response = request(method, demo, path)
        error_of(response, 405)
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert {"GET"} <= allowed and ("POST" in allowed) == (path == "/say")

    def test_unknown_page_on_the_demo_app_is_404_json(self, demo: Server) -> None:
        error_of(get(demo, "/no/such/page"), 404)

    # -- /stats, /healthz -----------------------------------------------------------------

    def test_stats(self, demo: Server, stream: t.Callable[..., StreamClient]) -> None:
        wait_for_streams(demo, 1)  # only the witness
        before = demo.stats()
        assert set(before) == {"consumers", "channels", "published", "dropped", "backend"}
        assert (before["channels"], before["dropped"], before["backend"]) == (
            {WITNESS: 1},
            0,
            "memory",
        )
        one = stream(demo.url, channels=["stats-a"])
        two = stream(demo.url, channels=["stats-a", "stats-b"])
        expected = {
            "consumers": 3,
            "channels": {WITNESS: 1, "stats-a": 2, "stats-b": 1},
            "published": before["published"],
            "dropped": 0,
            "backend": "memory",
        }
        wait_until(lambda: demo.stats() == expected, 10, f"/stats to show {expected}")
        demo.say("a", channel="stats-a")
        demo.say("b", channel="stats-b")
        demo.say("nobody listens", channel="stats-none")
        assert get(demo, "/say", params={"channel": "stats-a"}).status_code == 200
        hello = re.compile(r"hello \d+")
        first, second = [e.data for e in one.take(2)], [e.data for e in two.take(3)]
        assert first[0] == "a" and hello.fullmatch(first[1]), first
        assert second[:2] == ["a", "b"] and second[2] == first[1], second
        assert demo.stats() == {**expected, "published": before["published"] + 4}
        two.close()
        wait_until(
            lambda: demo.stats()["channels"] == {WITNESS: 1, "stats-a": 1},
            10,
            "the closed stream to leave the registry",
        )
        assert demo.stats()["consumers"] == 2

    def test_healthz(self, demo: Server) -> None:
        response = get(demo, "/healthz")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {"status": "ok"}

    # -- GET /say -------------------------------------------------------------------------

    def test_get_say_without_msg_publishes_hello_n(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url, channels=["hello"])
        answers = [get(demo, "/say", params={"channel": "hello"}) for _ in range(3)]
        assert all(answer.status_code == 200 for answer in answers)
        events = listener.take(3)
        assert [e.id for e in events] == [answer.json()["id"] for answer in answers]
        numbers = [int(re.fullmatch(r"hello (\d+)", e.data).group(1)) for e in events]  # type: ignore[union-attr]
        assert numbers == sorted(set(numbers)) and numbers[0] >= 1
        assert all(e.event == "message" for e in events)

    def test_get_say_takes_msg_or_data_channel_and_event(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url, channels=["get-ch"])
        queries = [
            {"msg": "via msg", "channel": "get-ch"},
            {"data": "via data", "channel": "get-ch"},
            {"msg": "typed", "channel": "get-ch", "event": "note"},
            {"msg": "", "channel": "get-ch"},
        ]
        ids = []
        for query in queries:
            response = get(demo, "/say", params=query)
            assert response.status_code == 200, response.text
            assert isinstance(response.json()["id"], str) and response.json()["id"]
            ids.append(response.json()["id"])
        events = listener.take(len(queries))
        assert [(e.id, e.event, e.data) for e in events] == [
            (ids[0], "message", "via msg"),
            (ids[1], "message", "via data"),
            (ids[2], "note", "typed"),
            (ids[3], "message", ""),
        ]

    def test_get_say_on_the_default_channel(
        self, demo: Server, stream: t.Callable[..., StreamClient]
    ) -> None:
        listener = stream(demo.url)
        response = get(demo, "/say", params={"msg": "hi"})
        (event,) = listener.take(1)
        assert (event.id, event.data) == (response.json()["id"], "hi")

    # -- and the server served everyone throughout ----------------------------------------

    def test_the_open_stream_survived_every_error_and_got_nothing_refused(
        self, demo: Server, witness: StreamClient
    ) -> None:
        event_id = demo.say("still here", channel=WITNESS)
        (event,) = witness.take(1)
        assert (event.id, event.data) == (event_id, "still here")
        log = demo.log()
        assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]


# ---------------------------------------------------------------------------------------------
# A user's app with an authorizer, a publish token and stream limits
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def private(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    env = {
        "SSE_PUBLISH_TOKEN": TOKEN,
        "SSE_MAX_CONNECTIONS": "2",
        "SSE_MAX_STREAMS_PER_ADDRESS": "1",
    }
    server = Server.serve(
        ["--app", "apps.http_private:create_app"],
        env,
        tmp_path_factory.mktemp("http-private") / "gunicorn.log",
        1,
    )
    yield server
    server.stop()


class AddressStream:
    """An httpx-sse stream opened from a given loopback address, kept open until closed."""

    def __init__(self, url: str, address: str, channels: t.Sequence[str] = ()) -> None:
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(local_address=address), timeout=10
        )
        self._context = httpx_sse.connect_sse(
            self._client, "GET", url + "/events", params=[("channel", c) for c in channels]
        )
        self.source = self._context.__enter__()
        self.response = self.source.response
        if self.response.status_code != 200:
            self.response.read()

    def next_event(self) -> httpx_sse.ServerSentEvent:
        """The next event with data (the opening ``retry:`` frame has none)."""
        return next(event for event in self.source.iter_sse() if event.data)

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()


@pytest.fixture
def opened() -> t.Iterator[list[AddressStream]]:
    streams: list[AddressStream] = []
    yield streams
    for one in streams:
        one.close()


class TestPrivate:
    @pytest.fixture(autouse=True)
    def _idle(self, private: Server) -> None:
        # Streams limits are per worker: start each test with none open.
        wait_for_streams(private, 0)

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    # -- 401 ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="missing"),
            pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
            pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="token-plus-one"),
            pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="token-prefix"),
            pytest.param({"Authorization": "Bearer "}, id="empty-token"),
            pytest.param({"Authorization": f"Basic {TOKEN}"}, id="basic-scheme"),
            pytest.param({"Authorization": f"Token {TOKEN}"}, id="token-scheme"),
            pytest.param({"Authorization": TOKEN}, id="no-scheme"),
            pytest.param({"Authorization": f"Bearer\u00e9 {TOKEN}"}, id="non-ascii-scheme"),
        ],
    )
    def test_say_without_the_right_bearer_token_is_401(
        self, private: Server, headers: dict[str, str]
    ) -> None:
        published = private.stats()["published"]
        for response in (
            post(private, "/say", json={"data": "x"}, headers=headers),
            post(private, "/say", data={"data": "x"}, headers=headers),
            get(private, "/say", params={"msg": "x"}, headers=headers),
        ):
            message = error_of(response, 401)
            assert "Authorization: Bearer" in message
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert private.stats()["published"] == published, "a refused publish was sent"

    def test_say_with_the_bearer_token_publishes(self, private: Server) -> None:
        # /events itself needs no token.
        listener = StreamClient(private.url, channels=["open"])
        try:
            assert listener.response.status_code == 200
            posted = post(
                private, "/say", json={"data": "json", "channel": "open"}, headers=self.auth()
            )
            got = get(
                private, "/say", params={"msg": "query", "channel": "open"}, headers=self.auth()
            )
            form = post(
                private,
                "/say",
                data={"data": "form", "channel": "open"},
                headers={"Authorization": f"bearer {TOKEN}"},
            )
            assert [r.status_code for r in (posted, got, form)] == [200, 200, 200], [
                r.text for r in (posted, got, form)
            ]
            events = listener.take(3)
            assert [(e.id, e.data) for e in events] == [
                (r.json()["id"], d) for r, d in zip((posted, got, form), ("json", "query", "form"))
            ]
        finally:
            listener.close()

    # -- 403 ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "channels", [["secret"], ["secret-plans"], ["public", "secret:1"], ["secret", "public"]]
    )
    def test_refused_channel_is_403(self, private: Server, channels: list[str]) -> None:
        response = get(private, "/events", params=[("channel", c) for c in channels])
        message = error_of(response, 403)
        refused = next(c for c in channels if c.startswith("secret"))
        assert repr(refused) in message

    def test_allowed_channels_stream(self, private: Server) -> None:
        listener = StreamClient(private.url, channels=["public", "not-secret", "Secret"])
        try:
            assert listener.response.status_code == 200
            ids = [
                post(private, "/say", json={"data": c, "channel": c}, headers=self.auth()).json()[
                    "id"
                ]
                for c in ("public", "not-secret", "Secret")
            ]
            assert [(e.id, e.data) for e in listener.take(3)] == list(
                zip(ids, ["public", "not-secret", "Secret"])
            )
        finally:
            listener.close()

    # -- 503 ------------------------------------------------------------------------------

    def test_stream_limits_are_503_with_retry_after(
        self, private: Server, opened: list[AddressStream]
    ) -> None:
        opened.append(first := AddressStream(private.url, "127.0.0.1", ["lim"]))
        assert first.response.status_code == 200

        # SSE_MAX_STREAMS_PER_ADDRESS=1: a second stream from the same address.
        opened.append(again := AddressStream(private.url, "127.0.0.1", ["lim"]))
        message = error_of(again.response, 503)
        assert "SSE_MAX_STREAMS_PER_ADDRESS" in message and "127.0.0.1" in message
        assert (
            again.response.headers["Retry-After"].isdigit()
            and int(again.response.headers["Retry-After"]) >= 1
        )

        # SSE_MAX_CONNECTIONS=2: a second address is let in, a third is not.
        opened.append(second := AddressStream(private.url, "127.0.0.2", ["lim"]))
        assert second.response.status_code == 200
        opened.append(third := AddressStream(private.url, "127.0.0.3", ["lim"]))
        message = error_of(third.response, 503)
        assert "SSE_MAX_CONNECTIONS" in message
        assert (
            third.response.headers["Retry-After"].isdigit()
            and int(third.response.headers["Retry-After"]) >= 1
        )
        assert private.stats()["consumers"] == 2

        # Once a stream closes, its slot is free again.
        second.close()

        def accepted() -> AddressStream | None:
            attempt = AddressStream(private.url, "127.0.0.3", ["lim"])
            opened.append(attempt)
            if attempt.response.status_code == 200:
                return attempt
            error_of(attempt.response, 503)
            attempt.close()
            return None

        wait_until(accepted, 15, "a stream to be accepted after one closed")

        # The streams let in were served throughout.
        event_id = post(
            private, "/say", json={"data": "to both", "channel": "lim"}, headers=self.auth()
        ).json()["id"]
        for client in (first, opened[-1]):
            event = client.next_event()
            assert (event.id, event.data) == (event_id, "to both")

    def test_wrong_method_on_a_users_app_is_405_json(self, private: Server) -> None:
        # Routing errors never reach a blueprint's error handlers; /say is still ours to answer.
        response = request("DELETE", private, "/say")
        error_of(response, 405)
        assert "POST" in response.headers["Allow"]
