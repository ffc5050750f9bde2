"""htmx in Chromium against ``sse-flask serve``: htmx 2 with htmx-ext-sse (npm, pinned in
``tests/package.json``) on a page of another origin, listed in ``SSE_CORS_ORIGINS``.

htmx-ext-sse always opens its ``EventSource`` with ``withCredentials``; the stream's channel
here needs a cookie, so the page shows anything only if the browser sent its credentials
and accepted the server's CORS answer. The page is served by a plain HTTP server on another
port of 127.0.0.1: another origin, the same site (so the cookie is not third-party).
"""

from __future__ import annotations

import functools
import http.server
import threading
import typing as t
import urllib.parse
from pathlib import Path

import pytest
import requests
from helpers.env import free_port
from helpers.redis import RedisServer
from helpers.servers import Server
from helpers.wait import wait_until

if t.TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parent


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: t.Any) -> None:
        """The page server's requests are not the test's business."""


@pytest.fixture
def page_origin(node_modules: Path) -> t.Iterator[str]:
    """``tests/`` (pages in ``clients/``, npm packages in ``node_modules/``) served over HTTP
    on a free port of 127.0.0.1; its origin."""
    port = free_port()
    handler = functools.partial(_QuietHandler, directory=str(TESTS))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def publish_fragment(server: Server, **fields: t.Any) -> str:
    """Have the app render ``fragment.html`` and publish it as a ``row``; return the HTML."""
    response = requests.post(
        server.url + "/fragments", json=fields, timeout=10, headers={"Connection": "close"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["html"])


def rows(page: Page, count: int) -> str:
    """``#rows``'s HTML once it holds ``count`` fragments and htmx has settled them (it
    marks new content with the class ``htmx-added`` for a moment)."""
    script = """() => [document.querySelectorAll('#rows .fragment').length,
                       !!document.querySelector('.htmx-added')]"""
    wait_until(lambda: page.evaluate(script) == [count, False], 15, f"{count} fragments, settled")
    return str(page.evaluate("document.getElementById('rows').innerHTML"))


def test_htmx2_on_another_origin_shows_fragments_and_keeps_them_across_a_reload(
    browser: t.Any, serve: t.Callable[..., Server], redis_server: RedisServer, page_origin: str
) -> None:
    server = serve(
        app="apps.htmx_app:create_app",
        broker=redis_server.url,
        env={"SSE_CORS_ORIGINS": page_origin, "SSE_RETRY_MS": "300", "SSE_HEARTBEAT": "1"},
    )
    context = browser.new_context()
    try:
        context.add_cookies([{"name": "member", "value": "yes", "url": server.url}])
        page = context.new_page()
        stream = urllib.parse.quote(server.url + "/events?channel=rows", safe="")
        page.goto(f"{page_origin}/clients/htmx2.html?stream={stream}")
        page.wait_for_function("window.sseOpens >= 1", timeout=10_000)

        shown = [
            publish_fragment(server, n=1, text="one"),
            publish_fragment(server, n=2, items=["first", "second <b>bold</b>", "third"]),
            publish_fragment(server, n=3, text="three"),
        ]
        assert shown[1].count("\n") == 4, "the <ul> is published on several lines"
        assert rows(page, 3) == "".join(shown), (
            "each fragment as rendered, the multi-line <ul> intact"
        )
        assert page.evaluate("document.querySelectorAll('#f2 li').length") == 3

        # A graceful reload closes every stream; htmx's EventSource comes back with
        # Last-Event-ID, and gets what was published meanwhile, once.
        server.reload()
        shown.append(publish_fragment(server, n=4, text="after the reload"))
        assert rows(page, 4) == "".join(shown)
        assert page.evaluate("window.sseOpens") >= 2, "the stream was reopened"
    finally:
        context.close()


def test_ten_htmx2_tabs_through_sse_flask_js_hold_one_connection(
    browser: t.Any, serve: t.Callable[..., Server], node_modules: Path
) -> None:
    """``SSEFlask.htmx(htmx)``: htmx-ext-sse's streams go through sse-flask.js's shared
    connection, so ten tabs open one stream, and all ten show what is published."""
    server = serve(app="apps.htmx_app:create_app", env={"SSE_HEARTBEAT": "1"})
    context = browser.new_context()
    try:
        context.add_cookies([{"name": "member", "value": "yes", "url": server.url}])
        pages = []
        for _ in range(10):
            page = context.new_page()
            page.goto(f"{server.url}/tests/clients/htmx2-shared.html")
            pages.append(page)
        # A tab joins the shared stream when the worker has its subscription, and is then
        # told that the stream is open; only then does it get what is published.
        for page in pages:
            page.wait_for_function("window.sseOpens >= 1", timeout=10_000)
        assert server.stats()["consumers"] == 1, "one stream for ten tabs"
        html = publish_fragment(server, n=1, items=["shared", "by ten tabs"])
        for page in pages:
            assert rows(page, 1) == html
        assert server.stats()["consumers"] == 1, "still one stream"
    finally:
        context.close()


#: Hide the tab (``true``) or show it again, as the browser tells a page.
HIDE = """h => {
    Object.defineProperty(document, 'hidden', {value: h, configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


def test_htmx4_swaps_unnamed_messages_resumes_and_catches_up_a_hidden_tab(
    browser: t.Any, serve: t.Callable[..., Server], node_modules: Path
) -> None:
    """htmx 4's fetch-based hx-sse: unnamed HTML messages swapped in, an out-of-band part
    swapped elsewhere; after the server ends the stream, and after the tab was hidden (hx-sse
    lets go of the stream then), it resumes with Last-Event-ID and misses nothing."""
    server = serve(
        app="apps.htmx_app:create_app",
        env={"SSE_HEARTBEAT": "1", "SSE_RETRY_MS": "300", "SSE_MAX_STREAM_SECONDS": "3"},
    )
    context = browser.new_context()
    try:
        context.add_cookies([{"name": "member", "value": "yes", "url": server.url}])
        page = context.new_page()
        page.goto(f"{server.url}/tests/clients/htmx4.html")
        page.wait_for_function("window.sseOpens >= 1", timeout=10_000)
        wait_until(lambda: server.stats()["consumers"] == 1, 10, "the stream")
        shown = [publish_fragment(server, n=1, text="one", event="message")]
        with_oob = publish_fragment(
            server, n=2, items=["a", "b"], status="two rows", event="message"
        )
        main = with_oob.split('<span id="status"')[0]
        shown.append(main)
        assert rows(page, 2) == "".join(shown)
        assert page.evaluate("document.getElementById('status').textContent") == "two rows"
        assert "two rows" not in rows(page, 2), "the out-of-band part went to #status"

        wait_until(lambda: server.stats()["consumers"] == 0, 10, "the server to end the stream")
        shown.append(publish_fragment(server, n=3, text="while dropped", event="message"))
        assert rows(page, 3) == "".join(shown)

        page.evaluate(HIDE, True)
        wait_until(
            lambda: server.stats()["consumers"] == 0, 10, "the hidden tab to let go of the stream"
        )
        shown.append(publish_fragment(server, n=4, text="while hidden", event="message"))
        page.evaluate(HIDE, False)
        assert rows(page, 4) == "".join(shown)
    finally:
        context.close()
