"""The browser side, end to end: headless Chromium drives the demo page and sse-flask.js
against ``sse-flask serve`` (gunicorn, gevent workers) over real HTTP/1.1.

Chromium is Debian's, driven by Playwright for Python; nothing is downloaded. A failing
test leaves a screenshot of each of its pages in ``tests/screenshots/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import typing as t
from pathlib import Path

import pytest
import requests
from helpers.servers import Server
from helpers.wait import wait_until

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
STATUS = "document.getElementById('status').textContent"


@pytest.fixture
def context(
    browser: Browser, serve: t.Callable[..., Server], request: pytest.FixtureRequest
) -> t.Iterator[BrowserContext]:
    """A fresh browser profile; its pages are screenshot if the test fails, and any
    uncaught error in a page fails the test. It closes before the servers stop (it
    depends on ``serve``), so that no stream keeps a stopping worker waiting."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    failed = request.session.testsfailed
    yield context
    # The call phase has been reported by now: a failure has been counted.
    if request.session.testsfailed > failed:
        SCREENSHOTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for number, page in enumerate(context.pages):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{number}.png"), full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def open_demo(context: BrowserContext, url: str, query: str = "") -> Page:
    """Open the demo page and wait for it to show "open"."""
    page = context.new_page()
    page.goto(f"{url}/{query}")
    wait_for_status(page, "open")
    return page


def wait_for_status(page: Page, status: str, timeout: float = 10) -> None:
    page.wait_for_function(f"{STATUS} === {status!r}", timeout=timeout * 1000)


def record_states(page: Page) -> None:
    """From now on, keep every status the page shows in ``window.states``."""
    page.evaluate(
        """() => {
            const status = document.getElementById('status');
            window.states = [status.textContent];
            new MutationObserver(() => window.states.push(status.textContent))
                .observe(status, {childList: true, characterData: true, subtree: true});
        }"""
    )


def messages(page: Page, *, event_type: str | None = "message") -> list[dict[str, str]]:
    """The page's message list, oldest first: type, id, data and the line of metadata."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#messages li')].reverse().map(li => ({
            type: li.dataset.type, id: li.dataset.id,
            data: li.querySelector('.data').textContent, meta: li.querySelector('.meta').textContent}))"""
    )
    return [m for m in shown if event_type is None or m["type"] == event_type]


def wait_for_message(page: Page, data: str, timeout: float = 10) -> None:
    page.wait_for_function(
        "data => [...document.querySelectorAll('#messages .data')].some(e => e.textContent === data)",
        arg=data,
        timeout=timeout * 1000,
    )


def mode(page: Page) -> str:
    return str(page.evaluate("document.getElementById('mode').dataset.mode"))


# ---------------------------------------------------------------- the demo page


def test_page_opens_and_shows_each_message_at_once(context: BrowserContext, server: Server) -> None:
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = open_demo(context, server.url)
    # Chromium has SharedWorker: that is how this page shares its stream.
    assert mode(page) == "worker"

    event_id = server.say("published with /say")
    wait_for_message(page, "published with /say", timeout=1)

    page.fill("#message", "typed into the form")
    page.fill("#event-type", "greeting")
    page.press("#message", "Enter")
    wait_for_message(page, "typed into the form", timeout=1)

    first, typed = messages(page, event_type=None)
    assert first["type"] == "message" and first["id"] == event_id
    assert re.search(r"\d:\d\d", first["meta"]) and "id " + event_id in first["meta"]
    assert typed["type"] == "greeting" and typed["id"] and typed["id"] != event_id
    # The form is cleared when /say answers, which may come after the event itself: the
    # publish writes to the stream's socket before it answers.
    page.wait_for_function("document.getElementById('message').value === ''", timeout=5_000)
    assert page.text_content("#last-id") == typed["id"]
    page.wait_for_function(
        "document.getElementById('consumers').textContent === '1'", timeout=10_000
    )
    # No CDN: the page, its scripts, its worker and its stream all come from the server.
    assert requested and all(url.startswith(server.url + "/") for url in requested), requested


def test_data_is_shown_as_text_never_as_html(context: BrowserContext, server: Server) -> None:
    page = open_demo(context, server.url)
    sent = [
        "<b>x</b>",
        '<img src="nowhere" onerror="window.injected = true">',
        "<script>window.injected = true</script>",
        "two\nlines",
    ]
    for data in sent:
        server.say(data)
    server.say({"order": 7, "items": ["<i>a</i>"]}, event="order")
    wait_for_message(page, '{"order":7,"items":["<i>a</i>"]}')

    assert [m["data"] for m in messages(page)] == sent
    assert page.locator("#messages b, #messages img, #messages script, #messages i").count() == 0
    assert page.evaluate("window.injected") is None


def test_channel_picker_listens_to_the_channels_chosen(
    context: BrowserContext, server: Server
) -> None:
    page = open_demo(context, server.url)
    page.fill("#channels", "news alerts")
    page.press("#channels", "Enter")
    wait_for_status(page, "open")
    wait_until(
        lambda: server.stats()["channels"] == {"alerts": 1, "news": 1},
        10,
        "one stream on news and alerts",
    )
    assert "channel=alerts&channel=news" in page.url

    server.say("on default")
    server.say("on news", channel="news")
    server.say("on alerts", channel="alerts", event="alert")
    wait_for_message(page, "on alerts")
    assert [(m["type"], m["data"]) for m in messages(page, event_type=None)] == [
        ("message", "on news"),
        ("alert", "on alerts"),
    ]

    # The send form publishes to the first channel listened to unless told otherwise.
    page.fill("#message", "from the form")
    page.press("#message", "Enter")
    wait_for_message(page, "from the form", timeout=1)


def test_page_is_keyboard_friendly_and_fits_a_phone(
    context: BrowserContext, server: Server
) -> None:
    page = open_demo(context, server.url)
    page.set_viewport_size({"width": 360, "height": 740})
    server.say("a rather long message " * 20)
    server.say("x" * 300, event="a-long-event-type-name")
    wait_for_message(page, "x" * 300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # "/" jumps to the message box; Enter sends; the focus stays there for the next one.
    page.locator("body").press("/")
    assert page.evaluate("document.activeElement.id") == "message"
    page.keyboard.type("sent with the keyboard")
    page.keyboard.press("Enter")
    wait_for_message(page, "sent with the keyboard", timeout=1)
    assert page.evaluate("document.activeElement.id") == "message"
    # Every control can be reached with Tab, in reading order.
    page.focus("a.skip")
    reached = []
    for _ in range(8):
        reached.append(
            page.evaluate("document.activeElement.id || document.activeElement.textContent")
        )
        page.keyboard.press("Tab")
    assert reached == [
        "Skip to the message box",
        "channels",
        "Listen",
        "message",
        "event-type",
        "say-channel",
        "Send",
        "clear",
    ]


def test_helper_api_typed_handlers_and_json(context: BrowserContext, server: Server) -> None:
    """SSEFlask.connect on its own: the stream beside the script by default, typed handlers,
    "*" for every type, JSON parsed where it is JSON, and close() ends the stream."""
    page = context.new_page()
    page.goto(server.url + "/?channel=elsewhere")
    page.evaluate(
        """() => new Promise(resolve => {
            window.got = [];
            window.api = SSEFlask.connect({channels: ["api", "api2"], json: true, share: "none", onstate: state => {
                window.got.push(["state", state]);
                if (state === "open") { resolve(); }
            }});
            api.on("order", (order, event) => got.push(["order", order, event.id]));
            const off = api.on("message", text => got.push(["message", text]));
            api.on("message", text => { if (text === "last") { off(); } });
            api.on("*", (data, event) => got.push(["*", event.type]));
        })"""
    )
    assert page.evaluate("api.mode") == "direct"
    order_id = server.say({"order": 7, "lines": [1, 2]}, event="order", channel="api")
    server.say("plain text", channel="api2")
    server.say("last", channel="api")
    server.say("after off", channel="api")
    page.wait_for_function(
        "got.some(g => g[0] === '*' && g[1] === 'message') && got.filter(g => g[0] === '*').length === 4"
    )
    assert page.evaluate("got") == [
        ["state", "connecting"],
        ["state", "open"],
        ["order", {"order": 7, "lines": [1, 2]}, order_id],
        ["*", "order"],
        ["message", "plain text"],
        ["*", "message"],
        ["message", "last"],
        ["*", "message"],
        ["*", "message"],
    ]
    assert server.stats()["channels"] == {"api": 1, "api2": 1, "elsewhere": 1}
    page.evaluate("api.close()")
    wait_until(
        lambda: server.stats()["channels"] == {"elsewhere": 1}, 10, "the helper's stream to close"
    )
    assert page.evaluate("api.state") == "closed"


def test_helper_exports_its_api(context: BrowserContext, server: Server) -> None:
    """What a page reaches through ``SSEFlask``: its names, the protocol version that tabs and
    the worker agree on, the Client that connect() returns, and EventSource's constants on the
    class and its instances, as on the browser's own."""
    page = open_demo(context, server.url)
    api = page.evaluate(
        """() => {
            const client = SSEFlask.connect({channels: ["exports"], share: "none"});
            client.close();
            const source = SSEFlask.EventSource;
            return {
                names: Object.fromEntries(Object.entries(SSEFlask).map(([k, v]) => [k, typeof v])),
                version: SSEFlask.version,
                client: [client instanceof SSEFlask.Client, client.state],
                constants: [source.CONNECTING, source.OPEN, source.CLOSED],
                onInstances: [source.prototype.CONNECTING, source.prototype.OPEN,
                    source.prototype.CLOSED],
            };
        }"""
    )
    assert api == {
        "names": {
            "connect": "function",
            "stream": "function",
            "Client": "function",
            "Parser": "function",
            "version": "string",
            "EventSource": "function",
            "htmx": "function",
        },
        "version": "sse-flask/1",
        "client": [True, "closed"],
        "constants": [0, 1, 2],
        "onInstances": [0, 1, 2],
    }


# ---------------------------------------------------------------- resilience


def test_restart_shows_reconnecting_then_every_event_in_order(
    context: BrowserContext, serve: t.Callable[..., Server]
) -> None:
    """Graceful restart (SIGHUP): the old worker closes its streams, the page reconnects to
    the new worker with Last-Event-ID and gets `missed` (the in-process history died with
    the old worker) and then everything the new one retained. Every publish accepted
    during the restart is on the page once, in order."""
    server = serve(env={"SSE_HEARTBEAT": "1", "SSE_RETRY_MS": "500"})
    page = open_demo(context, server.url)
    record_states(page)
    accepted = [f"before {n}" for n in range(3)]
    for data in accepted:
        server.say(data)
    wait_for_message(page, accepted[-1])

    stop = threading.Event()

    def publish() -> None:
        # Retry each event until the server accepts it; count only what was accepted.
        number = 0
        while not stop.is_set():
            number += 1
            data = f"during {number}"
            while True:
                with contextlib.suppress(requests.RequestException):
                    if (
                        requests.post(
                            server.url + "/say", json={"data": data}, timeout=5
                        ).status_code
                        == 200
                    ):
                        accepted.append(data)
                        break
                stop.wait(0.05)
            stop.wait(0.02)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_until(lambda: len(accepted) > 8, 10, "a few events published before the restart")
        server.reload()
        published = len(accepted)
        wait_until(
            lambda: len(accepted) > published + 5, 10, "a few events published after the restart"
        )
    finally:
        stop.set()
        publisher.join()
    server.say("after")
    accepted.append("after")
    wait_for_message(page, "after", timeout=20)

    states = page.evaluate("window.states")
    assert states[0] == "open" and "reconnecting" in states and states[-1] == "open", states
    shown = messages(page)
    assert [m["data"] for m in shown] == accepted
    assert len({m["id"] for m in shown}) == len(shown)
    missed = messages(page, event_type="missed")
    assert missed, "the page was not told that the new worker does not have the old one's history"


def test_helper_backs_off_honours_retry_after_and_resumes(
    context: BrowserContext, serve: t.Callable[..., Server]
) -> None:
    """A 500 and a 503 would make EventSource give up for good; sse-flask.js waits (at
    least Retry-After) and comes back with the last event id, missing nothing.

    The server ends the first stream itself, at the end of its SSE_MAX_STREAM_SECONDS
    lifetime (4.5 to 5 s), after the faults are queued; the stream it then opens lasts as long.
    """
    env = {"SSE_HEARTBEAT": "1", "SSE_RETRY_MS": "300", "SSE_MAX_STREAM_SECONDS": "5"}
    server = serve(app="apps.browser_faults:create_app", env=env)
    page = open_demo(context, server.url)
    first = server.say("before the outage")
    wait_for_message(page, "before the outage")
    page.evaluate(
        """() => {
            window.details = [];
            const detail = document.getElementById('status-detail');
            new MutationObserver(() => window.details.push(detail.textContent))
                .observe(detail, {childList: true, characterData: true, subtree: true});
        }"""
    )
    record_states(page)
    server.post("/_faults", json={"answers": [[500, None], [503, "2"]]}).raise_for_status()
    assert len(server.get("/_faults").json()) == 1, "the first stream ended before the faults"
    wait_for_status(page, "reconnecting")
    server.say("during the outage 1")
    server.say("during the outage 2", event="update")
    wait_for_message(page, "during the outage 2", timeout=15)
    wait_for_status(page, "open")

    attempts = server.get("/_faults").json()[1:]
    assert [status for _, status, _ in attempts] == [500, 503, None]
    assert all(last_event_id == first for _, _, last_event_id in attempts)
    (_, _, _), (at_503, _, _), (at_retry, _, _) = attempts
    assert at_retry - at_503 >= 2.0, "reconnected before Retry-After"
    assert at_retry - at_503 < 2.0 * 1.25 + 1.0
    assert [m["data"] for m in messages(page, event_type=None)] == [
        "before the outage",
        "during the outage 1",
        "during the outage 2",
    ]
    details = " | ".join(page.evaluate("window.details"))
    assert "500" in details and "503" in details and "fault injected" in details, details
    assert "closed" not in page.evaluate("window.states")


def test_refused_channel_closes_with_the_servers_reason(
    context: BrowserContext, serve: t.Callable[..., Server]
) -> None:
    server = serve(app="apps.browser_faults:create_app")
    page = context.new_page()
    page.goto(server.url + "/?channel=forbidden")
    wait_for_status(page, "closed")
    assert "403" in (page.text_content("#status-detail") or "")
    assert "you may not listen to channel 'forbidden'" in (
        page.text_content("#status-detail") or ""
    )


def test_a_204_closes_the_helper_for_good(
    context: BrowserContext, serve: t.Callable[..., Server]
) -> None:
    """204 No Content is how a server tells an EventSource to stop: the helper closes and
    never asks again, whatever its backoff (1 s to start with)."""
    server = serve(app="apps.browser_faults:create_app")
    server.post("/_faults", json={"answers": [[204, None]]}).raise_for_status()
    page = context.new_page()
    page.goto(server.url + "/")
    wait_for_status(page, "closed")
    assert "not to reconnect (204 No Content)" in (page.text_content("#status-detail") or "")
    page.wait_for_timeout(3000)
    assert [status for _, status, _ in server.get("/_faults").json()] == [204]


# ---------------------------------------------------------------- one stream for all tabs


@pytest.mark.parametrize("share", ["worker", "leader"])
def test_ten_tabs_share_one_stream(context: BrowserContext, server: Server, share: str) -> None:
    """Over HTTP/1.1 a browser opens at most 6 connections per origin: ten tabs with a
    stream each could not even load. Shared, they hold one stream, and closing the tab
    that holds it (leader mode) hands it to another without losing an event."""
    pages = [open_demo(context, server.url, f"?share={share}") for _ in range(10)]
    if share == "worker":
        assert {mode(page) for page in pages} == {"worker"}
        holder = pages[3]
    else:
        assert sorted(mode(page) for page in pages) == ["follower"] * 9 + ["leader"]
        holder = next(page for page in pages if mode(page) == "leader")
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "one stream for ten tabs")

    server.say("to every tab")
    for page in pages:
        wait_for_message(page, "to every tab", timeout=2)

    holder.close()
    rest = [page for page in pages if page is not holder]
    # Published at once: a new leader resumes from the last id it saw, so it gets it too.
    server.say("after the holder left")
    for page in rest:
        wait_for_message(page, "after the holder left")
    if share == "leader":
        assert sorted(mode(page) for page in rest) == ["follower"] * 8 + ["leader"]
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "still one stream")
    for page in rest:
        assert [m["data"] for m in messages(page)] == ["to every tab", "after the holder left"]


def test_tabs_leave_and_the_stream_closes(context: BrowserContext, server: Server) -> None:
    pages = [open_demo(context, server.url) for _ in range(2)]
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "one stream for two tabs")
    for page in pages:
        page.close()
    wait_until(lambda: server.stats()["consumers"] == 0, 10, "the stream closed with the last tab")


# ---------------------------------------------------------------- the parser


PARSER_CASES: list[tuple[list[str], list[tuple[str, str, str | None]]]] = [
    (["data: a\n\n"], [("message", "a", None)]),
    (
        ["data: a\r\n\r\n", "data: b\r\r", "data: c\n\n"],
        [("message", "a", None), ("message", "b", None), ("message", "c", None)],
    ),
    # CRLF split across chunks is one line break, not two.
    (["data: a\r", "\ndata: b\r", "\n\r", "\n"], [("message", "a\nb", None)]),
    (["da", "ta", ":", " x", "\n", "\n"], [("message", "x", None)]),
    (['event: order\nid: e-1\ndata: {"n": 1}\n\n'], [("order", '{"n": 1}', "e-1")]),
    (["data:no space\ndata:  two spaces\n\n"], [("message", "no space\n two spaces", None)]),
    ([": heartbeat\n\ndata\n\n"], [("message", "", None)]),
    (["id: e-2\n\n", "event: ping\n\n", "data: after\n\n"], [("message", "after", None)]),
    (["id: a\0b\ndata: x\n\n"], [("message", "x", None)]),
    (["retry: 1234\nretry: soon\ndata: x\n\n"], [("message", "x", None)]),
    (["data: unfinished"], []),
]


def test_parser_reads_streams_as_the_standard_says(context: BrowserContext, server: Server) -> None:
    page = open_demo(context, server.url)
    for chunks, expected in PARSER_CASES:
        events = page.evaluate(
            """chunks => {
                const events = [];
                const parser = new SSEFlask.Parser("", e => e && events.push([e.type, e.data, e.id]), () => {});
                chunks.forEach(chunk => parser.feed(chunk));
                return events;
            }""",
            chunks,
        )
        assert [tuple(event) for event in events] == expected, chunks
    retries = page.evaluate(
        """() => { const r = []; new SSEFlask.Parser("", () => {}, v => r.push(v)).feed("retry: 1234\\nretry: soon\\nretry: 5s\\n\\n"); return r; }"""
    )
    assert retries == [1234]
    # An id with NUL is ignored; the last good one is what a reconnection sends.
    last = page.evaluate(
        """() => { const p = new SSEFlask.Parser("", () => {}, () => {}); p.feed("id: e-2\\n\\nid: a\\u0000b\\n\\n"); return p.lastEventId; }"""
    )
    assert last == "e-2"


# ---------------------------------------------------------------- the inbox: a private channel


INBOX_STATUS = "document.getElementById('inbox-status').textContent"


def inbox_messages(page: Page) -> list[str]:
    """The data of each message in the inbox, oldest first."""
    return list(
        page.evaluate(
            "[...document.querySelectorAll('#inbox-messages .data')].reverse().map(e => e.textContent)"
        )
    )


def wait_for_inbox_message(page: Page, data: str, timeout: float = 10) -> None:
    page.wait_for_function(
        "data => [...document.querySelectorAll('#inbox-messages .data')].some(e => e.textContent === data)",
        arg=data,
        timeout=timeout * 1000,
    )


def wait_for_inbox_status(page: Page, status: str, timeout: float = 10) -> None:
    page.wait_for_function(f"{INBOX_STATUS} === {status!r}", timeout=timeout * 1000)


def say_to(server: Server, user: str, data: str) -> None:
    """Publish into ``user:<user>`` through the demo's own view (/say would need the
    publish token)."""
    response = server.post("/inbox-say", json={"user": user, "data": data})
    assert response.status_code == 200, response.text
    assert response.json()["channel"] == f"user:{user}"


def test_inbox_shows_its_users_messages_only(context: BrowserContext, server: Server) -> None:
    page = open_demo(context, server.url)
    assert page.text_content("#inbox-status") == "not open"
    page.fill("#inbox-user", "alice")
    page.press("#inbox-user", "Enter")
    wait_for_inbox_status(page, "open")
    assert "token valid until" in (page.text_content("#inbox-detail") or "")
    assert "inbox=alice" in page.url
    wait_until(
        lambda: server.stats()["channels"].get("user:alice") == 1, 10, "alice's inbox stream"
    )

    say_to(server, "bob", "for bob")
    say_to(server, "alice", "<b>for alice</b>")
    server.say("on default")
    # The focus went to the inbox's message box: type and press Enter to send to alice.
    assert page.evaluate("document.activeElement.id") == "inbox-message"
    page.keyboard.type("typed to alice")
    page.keyboard.press("Enter")
    wait_for_inbox_message(page, "typed to alice")
    wait_for_message(page, "on default")

    assert inbox_messages(page) == ["<b>for alice</b>", "typed to alice"]
    assert page.text_content("#inbox-count") == "2"
    assert [m["data"] for m in messages(page)] == ["on default"]
    assert page.locator("#inbox-messages b").count() == 0
    curl = """/inbox-say -H 'Content-Type: application/json' -d '{"user":"alice","data":"hi"}'"""
    assert curl in (page.text_content("#inbox-curl") or "")
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_an_inbox_token_opens_that_inbox_only(server: Server) -> None:
    """Plain HTTP: /inbox-token mints a token for user:NAME only; a private channel without
    a token, or with another user's, is refused."""
    answer = server.get("/inbox-token", params={"user": "alice"}).json()
    assert answer["channel"] == "user:alice" and answer["expires_in"] == 600
    alices = answer["token"]

    refused = server.get("/events", params={"channel": "user:bob", "token": alices})
    assert refused.status_code == 403 and "'user:bob' is private" in refused.json()["error"]
    refused = server.get("/events", params={"channel": "user:alice"})
    assert refused.status_code == 403 and "token" in refused.json()["error"]
    with server.get(
        "/events", params={"channel": "user:alice", "token": alices}, stream=True
    ) as opened:
        assert opened.status_code == 200

    for bad in ["", "a b", "x" * 124, "<script>"]:
        response = server.get("/inbox-token", params={"user": bad})
        assert response.status_code == 400 and response.json()["error"], bad
    for bad in ["soon", "0", "-1", "nan", "inf"]:
        response = server.get("/inbox-token", params={"user": "alice", "seconds": bad})
        assert response.status_code == 400 and "seconds" in response.json()["error"], bad
    assert (
        server.get("/inbox-token", params={"user": "alice", "seconds": "2.5"}).json()["expires_in"]
        == 2.5
    )
    assert (
        server.get("/inbox-token", params={"user": "alice", "seconds": "1e9"}).json()["expires_in"]
        == 600
    )


def test_inbox_renews_its_token_and_misses_nothing(context: BrowserContext, server: Server) -> None:
    """The server ends the stream when its token expires; the page asks for a new token
    and resumes from the last event it had: what was published in between arrives too.
    Token requests are held here until released, with a short lifetime for the first."""
    page = context.new_page()
    held: list[t.Any] = []
    page.route("**/inbox-token?*", lambda route: held.append(route))

    def token_requests(count: int) -> None:
        # Evaluating something lets Playwright dispatch the route handler meanwhile.
        wait_until(
            lambda: page.evaluate("true") and len(held) >= count, 10, f"{count} token requests"
        )

    page.goto(server.url + "/?inbox=carol")
    token_requests(1)
    held[0].continue_(url=held[0].request.url + "&seconds=2")
    wait_for_inbox_status(page, "open")
    say_to(server, "carol", "before expiry")
    wait_for_inbox_message(page, "before expiry")

    token_requests(2)
    assert page.evaluate(INBOX_STATUS) == "reconnecting"
    wait_until(
        lambda: not server.stats()["channels"].get("user:carol"),
        5,
        "the server to close the expired stream",
    )
    say_to(server, "carol", "while renewing")
    held[1].continue_(url=held[1].request.url + "&seconds=60")
    wait_for_inbox_status(page, "open")
    say_to(server, "carol", "after renewal")
    wait_for_inbox_message(page, "after renewal")

    assert inbox_messages(page) == ["before expiry", "while renewing", "after renewal"]
    assert len(held) == 2


# ---------------------------------------------------------------- jobs and view streams

ANSWER_STATUS = "document.getElementById('answer-status').textContent"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def wait_for_words(page: Page, count: int) -> None:
    words = "Number(document.getElementById('answer-count').textContent)"
    page.wait_for_function(f"{words} >= {count}", timeout=10_000)


def answer_requests(requested: list[str], url: str) -> list[str]:
    return [each for each in requested if each.startswith(url + "/events?") and "job%3A" in each]


def test_answer_resumes_after_a_drop_with_every_word_once(
    context: BrowserContext, server: Server, tmp_path: Path
) -> None:
    """The demo's answer panel: a job's words, a drop mid-answer, a resume that replays what
    was missed, and the end at done: state closed, no reconnection (which would restart it)."""
    from sse_flask.demo import fake_answer

    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = open_demo(context, server.url)
    question = "How do jobs survive a dropped connection?"
    page.fill("#answer-question", question)
    page.press("#answer-question", "Enter")
    wait_for_words(page, 5)
    page.click("#answer-drop")
    page.wait_for_function(f"{ANSWER_STATUS} === 'reconnecting'", timeout=5_000)
    page.wait_for_function(f"{ANSWER_STATUS} === 'closed'", timeout=30_000)
    words = fake_answer(question)
    assert page.text_content("#answer-text") == " ".join(words)
    assert page.text_content("#answer-detail") == (
        f"done: {len(words)} words of {len(words)}, nothing repeated or missing; "
        "dropped 1×, resumed each time (replayed words marked)"
    )
    assert page.text_content("#answer-error") == ""
    # Two requests: the first, and the resume from the last word the page had.
    streams = answer_requests(requested, server.url)
    assert len(streams) == 2, streams
    # docs/answer.png is rewritten only when asked for, so that a test run leaves the tree clean.
    shot = DOCS / "answer.png" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "answer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert page.evaluate("document.getElementById('answer-drop').disabled")


def test_stop_cancels_the_answer_and_closes(context: BrowserContext, server: Server) -> None:
    page = open_demo(context, server.url)
    page.fill("#answer-question", "Stop me")
    page.press("#answer-question", "Enter")
    wait_for_words(page, 3)
    page.click("#answer-stop")
    page.wait_for_function(f"{ANSWER_STATUS} === 'closed'", timeout=5_000)
    count = int(page.text_content("#answer-count") or "0")
    assert page.text_content("#answer-detail") == f"stopped after {count} words"


def test_view_stream_posts_reads_to_done_and_closes(
    context: BrowserContext, server: Server
) -> None:
    """SSEFlask.stream(url, {method: "POST", body}) reads a view's own stream (sse.stream)
    once: the items, then done, then state closed, and no second request."""
    from sse_flask.demo import fake_answer

    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.method + " " + request.url))
    page = open_demo(context, server.url)
    result = page.evaluate(
        """() => new Promise(resolve => {
            const words = [], states = [];
            const answer = SSEFlask.stream('/answer/stream', {
                method: 'POST', body: {question: 'view?'}, headers: {'X-Test': 'yes'},
                onstate: (state, detail) => {
                    states.push(state);
                    if (state === 'closed') { resolve({words, states, detail, done: answer.done}); }
                }
            });
            answer.on('message', word => words.push(word));
            answer.on('done', (data, event) => { answer.done = [event.data, event.id]; });
        })"""
    )
    words = fake_answer("view?")
    assert result["words"] == words
    assert result["states"] == ["connecting", "open", "closed"]
    assert result["detail"] == {"event": "done", "final": True}
    assert result["done"] == [f'{{"items":{len(words)}}}', str(len(words) + 1)]
    posted = [each for each in requested if "/answer/stream" in each]
    assert posted == [f"POST {server.url}/answer/stream"]


def test_view_stream_that_drops_is_not_reopened(context: BrowserContext, server: Server) -> None:
    """A view's stream cut before its end closes with the reason: reopening it would start
    the work again."""
    page = open_demo(context, server.url)
    result = page.evaluate(
        """() => new Promise(resolve => {
            const answer = SSEFlask.stream('/answer/stream?question=cut', {
                share: 'none',
                onstate: (state, detail) => {
                    if (state === 'open') { setTimeout(() => answer.drop(), 300); }
                    if (state === 'closed') { resolve(detail); }
                }
            });
        })"""
    )
    assert result["error"] == "the connection was cut by drop()"
