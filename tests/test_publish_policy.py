"""Who may publish over HTTP: ``/say`` is closed until the app sets ``SSE_PUBLISH_TOKEN`` or
opts in with ``SSE_OPEN_PUBLISH``; a page from another site never publishes through its
visitors' browsers; a private channel needs the token even when publishing is open.
``sse.publish()`` from Python is not concerned.

Contract lines pinned: the ``/say`` rows of the error table (401 for a missing or wrong
token, 403 when publishing is off, from another site, or into a private channel without the
token), ``SSE_OPEN_PUBLISH`` and its start-up warning under any server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import requests
from flask import Flask

from conftest import TESTS, wait_until
from sse_flask import SSE
from sse_flask.config import DEFAULTS

TOKEN = "publish-policy token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FOREIGN = "https://evil.example"
LISTED = "https://app.example"


@pytest.fixture(autouse=True)
def _no_sse_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test's app.config only, whatever the shell exported."""
    for key in DEFAULTS:
        monkeypatch.delenv(key, raising=False)


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    SSE(app)
    return app


def published(app: Flask) -> int:
    return int(app.extensions["sse"].broker.stats()["published"])


def test_closed_by_default() -> None:
    """With neither setting, /say answers 403 naming both ways to open it, and publishes nothing."""
    app = make_app()
    client = app.test_client()
    for response in (client.get("/say?msg=x"), client.post("/say", json={"data": "x"}), client.post("/say", data={"data": "x"})):
        assert response.status_code == 403
        error = response.json["error"]
        assert "SSE_PUBLISH_TOKEN" in error and "SSE_OPEN_PUBLISH" in error
    assert published(app) == 0
    assert app.extensions["sse"].sse.publish("from Python") and published(app) == 1


def test_open_publish() -> None:
    """SSE_OPEN_PUBLISH lets requests without a token publish into public channels only."""
    app = make_app(SSE_OPEN_PUBLISH=True)
    client = app.test_client()
    assert client.get("/say?msg=x").status_code == 200
    assert client.post("/say", data={"data": "x", "channel": "news"}).status_code == 200
    for response in (client.get("/say?msg=x&channel=user:alice"), client.post("/say", json={"data": "x", "channel": "user:alice"})):
        assert response.status_code == 403
        assert "private" in response.json["error"] and "SSE_PUBLISH_TOKEN" in response.json["error"]
    assert published(app) == 2


def test_publish_token() -> None:
    """With SSE_PUBLISH_TOKEN, the bearer token publishes, private channels included; a
    request without it, or with another, is refused with 401 and publishes nothing."""
    app = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    client = app.test_client()
    assert client.get("/say?msg=x").status_code == 401
    assert client.get("/say?msg=x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert published(app) == 0
    assert client.get("/say?msg=x&channel=user:alice", headers=BEARER).status_code == 200
    assert client.post("/say", json={"data": "x"}, headers=BEARER).status_code == 200
    assert published(app) == 2


@pytest.mark.parametrize(
    ("headers", "form", "status"),
    [
        ({"Origin": FOREIGN}, True, 403),
        ({"Origin": FOREIGN}, False, 403),
        ({"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}, True, 403),
        ({"Origin": "null"}, True, 403),
        # A cross-site GET (an <img>, a link) sends Sec-Fetch-Site but no Origin.
        ({"Sec-Fetch-Site": "cross-site"}, None, 403),
        ({"Sec-Fetch-Site": "same-site"}, None, 403),
        ({"Origin": LISTED}, True, 403),
        ({"Origin": LISTED, "Sec-Fetch-Site": "cross-site"}, False, 200),
        ({"Origin": LISTED}, None, 200),
        ({"Origin": "http://localhost"}, True, 200),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://proxy.example"}, True, 200),
        ({"Sec-Fetch-Site": "none"}, None, 200),
        ({}, True, 200),
    ],
)
@pytest.mark.parametrize("config", [{"SSE_OPEN_PUBLISH": True}, {"SSE_PUBLISH_TOKEN": TOKEN}])
def test_cross_site(config: dict[str, t.Any], headers: dict[str, str], form: bool | None, status: int) -> None:
    """Only same-origin requests, and listed origins sending JSON, publish; ``form`` None is a GET.

    With the token too: a page could hold it, and a form posted from another site must never publish.
    """
    app = make_app(SSE_CORS_ORIGINS=[LISTED], **config)
    client = app.test_client()
    headers = {**headers, **(BEARER if "SSE_PUBLISH_TOKEN" in config else {})}
    if form is None:
        response = client.get("/say?msg=x", headers=headers)
    elif form:
        response = client.post("/say", data={"data": "x"}, headers=headers)
    else:
        response = client.post("/say", json={"data": "x"}, headers=headers)
    assert response.status_code == status, response.json
    assert published(app) == (status == 200)
    if status == 403:
        assert "SSE_CORS_ORIGINS" in response.json["error"] or "JSON" in response.json["error"]


def test_any_origin_still_needs_json() -> None:
    """SSE_CORS_ORIGINS ``*`` lets any origin publish JSON, never a form."""
    app = make_app(SSE_CORS_ORIGINS="*", SSE_OPEN_PUBLISH=True)
    client = app.test_client()
    assert client.post("/say", json={"data": "x"}, headers={"Origin": FOREIGN}).status_code == 200
    refused = client.post("/say", data={"data": "x"}, headers={"Origin": FOREIGN})
    assert refused.status_code == 403 and "JSON" in refused.json["error"]
    assert published(app) == 1


@pytest.mark.parametrize(
    ("config", "warned"),
    [
        ({"SSE_OPEN_PUBLISH": True}, True),
        ({}, False),
        ({"SSE_PUBLISH_TOKEN": TOKEN}, False),
        ({"SSE_PUBLISH_TOKEN": TOKEN, "SSE_OPEN_PUBLISH": True}, False),
    ],
)
def test_open_publish_warns_at_setup(caplog: pytest.LogCaptureFixture, config: dict[str, t.Any], warned: bool) -> None:
    """init_app itself warns that anyone may publish, so every server's log says so."""
    with caplog.at_level(logging.WARNING):
        make_app(**config)
    warnings = [record for record in caplog.records if "SSE_OPEN_PUBLISH is on" in record.getMessage()]
    assert len(warnings) == warned
    assert all(record.levelno == logging.WARNING for record in warnings)


# --- under plain gunicorn ------------------------------------------------------------------


class Gunicorn:
    """``gunicorn -k gevent`` serving ``apps.mounted:create_app()``, as a user would run it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
        command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", "127.0.0.1:0", "--no-control-socket"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "apps.mounted:create_app()"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base_env, "PYTHONUNBUFFERED": "1", **env},
                cwd=TESTS,
                start_new_session=True,
            )
        try:
            port = wait_until(self._listening, 30, "gunicorn to listen").group(1)
            self.url = f"http://127.0.0.1:{port}"
            wait_until(self._stats, 30, "/stats to answer")
        except AssertionError as e:
            self.stop()
            pytest.fail(f"gunicorn did not start ({e}); its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def published(self) -> int:
        return int(requests.get(self.url + "/stats", timeout=10).json()["published"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def _listening(self) -> re.Match[str] | None:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}")
        return re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())

    def _stats(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(self.url + "/stats", timeout=2).status_code == 200
        return False


@pytest.fixture
def gunicorn(tmp_path: Path) -> t.Iterator[t.Callable[[dict[str, str]], Gunicorn]]:
    servers: list[Gunicorn] = []

    def start(env: dict[str, str]) -> Gunicorn:
        servers.append(Gunicorn(env, tmp_path / f"gunicorn-{len(servers)}.log"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_mounted_app_under_plain_gunicorn(gunicorn: t.Callable[[dict[str, str]], Gunicorn]) -> None:
    """An app that only calls ``sse.init_app(app)``: a GET into a private channel and a form
    posted from another site are refused and publish nothing; with SSE_PUBLISH_TOKEN the
    bearer token publishes, and a foreign form still does not."""
    closed = gunicorn({})
    phish = requests.get(closed.url + "/say", params={"msg": "phish", "channel": "user:alice"}, timeout=10)
    forged = requests.post(closed.url + "/say", data={"data": "forged"}, headers={"Origin": FOREIGN}, timeout=10)
    assert (phish.status_code, forged.status_code) == (403, 403)
    assert "SSE_PUBLISH_TOKEN" in phish.json()["error"] and "SSE_OPEN_PUBLISH" in forged.json()["error"]
    assert closed.published() == 0
    assert "SSE_OPEN_PUBLISH is on" not in closed.log()

    guarded = gunicorn({"SSE_PUBLISH_TOKEN": TOKEN})
    assert requests.get(guarded.url + "/say", params={"msg": "x", "channel": "user:alice"}, timeout=10).status_code == 401
    forged = requests.post(guarded.url + "/say", data={"data": "forged"}, headers={"Origin": FOREIGN, **BEARER}, timeout=10)
    assert forged.status_code == 403 and "SSE_CORS_ORIGINS" in forged.json()["error"]
    assert guarded.published() == 0
    sent = requests.get(guarded.url + "/say", params={"msg": "x", "channel": "user:alice"}, headers=BEARER, timeout=10)
    assert sent.status_code == 200 and sent.json()["channel"] == "user:alice"
    assert guarded.published() == 1


def test_open_publish_warns_under_plain_gunicorn(gunicorn: t.Callable[[dict[str, str]], Gunicorn]) -> None:
    """SSE_OPEN_PUBLISH is logged as a WARNING by the worker that loads the app, without ``serve``."""
    server = gunicorn({"SSE_OPEN_PUBLISH": "true"})
    assert "SSE_OPEN_PUBLISH is on: /say publishes from anyone" in server.log()
    assert requests.get(server.url + "/say", params={"msg": "x"}, timeout=10).status_code == 200
    assert server.published() == 1
