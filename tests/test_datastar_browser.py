"""Datastar v1 in Chromium against ``sse-flask serve``: published patches, a view stream
that reads the page's signals, and resume after the server ends the stream.

Where the client comes from: Datastar v1 is not on npm (``@starfederation/datastar`` stops
at 1.0.0-beta.11, whose events are the older ``datastar-merge-*``); its maintainers ship
``bundles/datastar.js`` from GitHub only, which CI cannot reach. The PyPI wheel
``starhtml==0.7.0`` (pinned by its hash below) carries ``starhtml/static/js/datastar-core.js``,
"Datastar v1.0.1 (StarHTML patched: shadow-dom-scan, outside-race-fix)": the whole client as
one ES module, which sets itself up on import. ``pip download`` fetches the wheel (starhtml
needs Python 3.12, so it is downloaded, never installed) and the test serves that one file
to the page through Playwright, at ``/datastar/datastar-core.js``.

What Datastar v1.0.1's ``@get`` does when a stream ends (read from the bundle; the tests
assert it): with its default ``retry: 'auto'`` it reopens the stream only after a network error;
a stream the server ends (``SSE_MAX_STREAM_SECONDS``, a graceful reload) stays closed unless
the page asks for ``retry: 'always'``. Either way it sends the last id it had as
``Last-Event-ID`` and waits the stream's ``retry:``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import typing as t
import zipfile

import pytest
import requests
from helpers.env import need
from helpers.servers import Server
from helpers.wait import wait_until

if t.TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = pytest.mark.browser

#: The wheel that carries Datastar v1.0.1, and its sha256 (as PyPI lists it; pip checks it).
STARHTML = "starhtml==0.7.0"
STARHTML_SHA256 = "3515ac3a21f1be7ce3e724b45440ed2be20d3afcdb60f92f6ebbfaec883d3ea2"
BUNDLE = "starhtml/static/js/datastar-core.js"


@pytest.fixture(scope="session")
def datastar_js(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Datastar v1.0.1's client, read out of the ``starhtml`` wheel that pip downloads
    (from pip's cache when it has it)."""
    folder = tmp_path_factory.mktemp("starhtml")
    pinned = folder / "requirements.txt"
    pinned.write_text(f"{STARHTML} --hash=sha256:{STARHTML_SHA256}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--require-hashes", "-r", str(pinned), "-d", str(folder),
         "--disable-pip-version-check", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    wheels = list(folder.glob("starhtml-0.7.0-*.whl"))
    need(f"{STARHTML} from PyPI ({result.stderr.strip()[-300:]})", wheels)
    with zipfile.ZipFile(wheels[0]) as wheel:
        bundle = wheel.read(BUNDLE)
    assert bundle.startswith(b"// Datastar v1.0.1 "), bundle[:80]
    return bundle


def publish_item(server: Server, **fields: t.Any) -> str:
    """Have the app render ``item.html`` and publish it as a patch appended to ``#items``;
    return the HTML."""
    response = requests.post(
        server.url + "/items", json=fields, timeout=10, headers={"Connection": "close"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["html"])


def items(page: Page, count: int) -> str:
    """``#items``'s HTML once it holds ``count`` items."""
    script = "document.querySelectorAll('#items > li.item').length"
    wait_until(lambda: page.evaluate(script) >= count, 15, f"{count} items")
    return str(page.evaluate("document.getElementById('items').innerHTML"))


def text(page: Page, selector: str) -> str:
    return str(page.eval_on_selector(selector, "e => e.textContent"))


@pytest.fixture
def open_page(browser: t.Any, datastar_js: bytes) -> t.Iterator[t.Callable[[str], Page]]:
    """Open ``url`` (``clients/datastar.html`` on a server) in a new browser context that
    serves the Datastar bundle; fail the test on any error in the page."""
    context = browser.new_context()
    errors: list[str] = []

    def bundle(route: Route) -> None:
        route.fulfill(body=datastar_js, content_type="text/javascript; charset=utf-8")

    def open_(url: str) -> Page:
        page: Page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        return page

    context.route("**/datastar/datastar-core.js", bundle)
    try:
        yield open_
    finally:
        context.close()
    assert errors == [], "errors in the page"


def test_datastar_patches_signals_view_streams_and_resume(
    serve: t.Callable[..., Server], open_page: t.Callable[[str], Page]
) -> None:
    server = serve(
        app="apps.datastar_app:create_app",
        env={"SSE_HEARTBEAT": "1", "SSE_RETRY_MS": "1500", "SSE_MAX_STREAM_SECONDS": "3"},
    )
    page = open_page(f"{server.url}/tests/clients/datastar.html")
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "Datastar's @get to connect")

    # Published element patches, selector #items and mode append, several lines each.
    shown = [
        publish_item(server, n=1, text="one", lines=["first", "second <b>bold</b>"]),
        publish_item(server, n=2, text="two", lines=["third"]),
    ]
    assert shown[0].count("\n") >= 5, "the item is published on several lines"
    assert items(page, 2) == "".join(shown), "appended as rendered, every line intact"

    # A published signal patch reaches data-text; its element patch, #count's inside.
    assert server.post("/count").status_code == 200
    wait_until(lambda: text(page, "#count-text") == "1", 10, "the count signal")
    assert page.inner_html("#count") == "<span>1</span>"

    # A view stream (sse.stream) reads ?datastar= and answers with the page's signals.
    page.click("#greet")
    wait_until(lambda: text(page, "#greeting") == "hello, Ada <3", 10, "the greeting")
    assert page.inner_html("#greeted") == "Ada &lt;3 was here"

    # The server ends the stream; Datastar (retry 'always') reopens it after the stream's
    # retry: with Last-Event-ID, and gets what was published meanwhile, once.
    wait_until(lambda: server.stats()["consumers"] == 0, 10, "the server to end the stream")
    shown.append(publish_item(server, n=3, text="while dropped", lines=["missed"]))
    assert server.stats()["consumers"] == 0, "published while the page had no stream"
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "Datastar to reconnect")
    shown.append(publish_item(server, n=4, text="after", lines=["live again"]))
    assert items(page, 4) == "".join(shown), "nothing lost, nothing twice"


def test_datastar_retries_after_a_crash_but_not_after_a_graceful_end_by_default(
    serve: t.Callable[..., Server], open_page: t.Callable[[str], Page]
) -> None:
    """With ``@get``'s default ``retry: 'auto'``, a connection that fails (a worker killed)
    is retried, and a stream that the server ends (a graceful reload) is done: this is why
    the docs' pages ask for ``retry: 'always'``."""
    server = serve(
        app="apps.datastar_app:create_app", env={"SSE_HEARTBEAT": "1", "SSE_RETRY_MS": "200"}
    )
    page = open_page(f"{server.url}/tests/clients/datastar.html?retry=auto")
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "Datastar's @get to connect")
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: server.worker_pids() not in ([], [worker]), 30, "a new worker")
    wait_until(lambda: server.stats()["consumers"] == 1, 10, "Datastar to retry")
    assert page.evaluate("window.fetches") == ["started", "retrying"]

    server.reload()
    wait_until(lambda: "finished" in page.evaluate("window.fetches"), 10, "the stream's end")
    time.sleep(1)  # five times the stream's retry:
    assert server.stats()["consumers"] == 0, "not reopened"
    assert page.evaluate("window.fetches") == ["started", "retrying", "finished"]
