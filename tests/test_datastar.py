"""``sse_flask.datastar``: Datastar's events, formatted by datastar-py, published and streamed
from Flask with ids and resume like any event; signals read from ``?datastar=``.

At the HTTP level; ``test_datastar_browser.py`` runs Datastar's own client in Chromium.
"""

from __future__ import annotations

import json
import typing as t

import pytest
from apps import datastar_app
from datastar_py import ServerSentEventGenerator
from datastar_py.consts import ElementPatchMode
from flask.testing import FlaskClient

from sse_flask import Event, datastar, encode_event


@pytest.fixture
def client() -> FlaskClient:
    return datastar_app.create_app().test_client()


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            datastar.patch_elements('<b id="n">1</b>', id="7"),
            ServerSentEventGenerator.patch_elements('<b id="n">1</b>', event_id="7"),
        ),
        (
            datastar.patch_elements(
                "<ul>\n  <li>a</li>\n</ul>", selector="#list", mode="inner", id="8"
            ),
            ServerSentEventGenerator.patch_elements(
                "<ul>\n  <li>a</li>\n</ul>",
                selector="#list",
                mode=ElementPatchMode.INNER,
                event_id="8",
            ),
        ),
        (
            datastar.patch_elements(selector="#gone", mode="remove", id="9"),
            ServerSentEventGenerator.remove_elements("#gone", event_id="9"),
        ),
        (
            datastar.patch_signals({"count": 3, "name": "é"}, only_if_missing=True, id="10"),
            ServerSentEventGenerator.patch_signals(
                {"count": 3, "name": "é"}, only_if_missing=True, event_id="10"
            ),
        ),
    ],
)
def test_frames_are_datastar_pys(ours: Event, theirs: str) -> None:
    """The same lines as datastar-py's frame; only the order of ``id`` and ``event`` differs."""
    assert sorted(encode_event(ours).decode().split("\n")) == sorted(theirs.split("\n"))


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="sideways"):
        datastar.patch_elements("<p></p>", mode="sideways")


def frames(chunks: t.Iterable[str | bytes], count: int) -> list[list[str]]:
    """The first ``count`` frames of a stream, as lines, without the opening ``retry:``."""
    text, found = "", []
    for chunk in chunks:
        text += chunk if isinstance(chunk, str) else chunk.decode()
        found = [
            frame.split("\n") for frame in text.removeprefix("retry: 3000\n").split("\n\n")[:-1]
        ]
        if len(found) >= count:
            break
    return found[:count]


def test_published_patches_have_ids_and_resume(client: FlaskClient) -> None:
    """A page that drops resumes after the last patch it had, and gets the rest exactly once."""
    first = client.post("/count").json
    second = client.post("/count").json
    assert first is not None and second is not None
    response = client.get(
        "/events?channel=counter", headers={"Last-Event-ID": first["elements"]}, buffered=False
    )
    try:
        assert frames(response.response, 2) == [
            [f"id: {second['signals']}", "event: datastar-patch-signals",
             'data: signals {"count":2}'],
            [f"id: {second['elements']}", "event: datastar-patch-elements", "data: mode inner",
             "data: selector #count", "data: elements <span>2</span>"],
        ]  # fmt: skip
    finally:
        response.close()


def test_a_view_stream_reads_the_signals_of_a_get(client: FlaskClient) -> None:
    signals = json.dumps({"count": 41})
    response = client.get(
        "/count/stream", query_string={"datastar": signals}, headers={"Datastar-Request": "true"}
    )
    assert response.get_data(as_text=True) == (
        'id: 1\nevent: datastar-patch-signals\ndata: signals {"count":42}\n\n'
        'id: 2\nevent: datastar-patch-elements\ndata: elements <b id="count">42</b>\n\n'
    )
    # Without Datastar's header the query is not Datastar's.
    assert '{"count":1}' in client.get(
        "/count/stream", query_string={"datastar": signals}
    ).get_data(as_text=True)


@pytest.mark.parametrize(
    ("signals", "message"), [("{nope", "not valid JSON"), ("[1]", "must be a JSON object")]
)
def test_bad_signals_are_refused(signals: str, message: str) -> None:
    app = datastar_app.create_app()
    with (
        app.test_request_context(
            "/", query_string={"datastar": signals}, headers={"Datastar-Request": "true"}
        ),
        pytest.raises(ValueError, match=message),
    ):
        datastar.read_signals()
