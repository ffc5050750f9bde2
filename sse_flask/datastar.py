"""Datastar's events from Flask: ``datastar-patch-elements`` and ``datastar-patch-signals``,
published to channels or streamed from a view like any other event.

datastar-py (``pip install 'sse-flask[datastar]'``) writes the format: its
``ServerSentEventGenerator`` makes each frame, which becomes an :class:`~sse_flask.Event`
(type and data lines) here. So the broker gives a published patch an id like any event, a
page that drops resumes with ``Last-Event-ID``, and a view stream keeps the ids it sets.
datastar-py has helpers for Django, FastAPI, Litestar, Quart, Sanic and Starlette; this is
the Flask one::

    from sse_flask import datastar

    datastar.publish(sse, datastar.patch_signals({"count": 3}), channel="counter")
    datastar.publish(sse, datastar.patch_elements('<b id="n">3</b>'), channel="counter")

Deliberate choices:

- datastar-py's ``retry`` is left out: the stream's own ``retry:`` (``SSE_RETRY_MS``)
  governs reconnection, as for every other event.
- Signals are read by datastar-py, as its other helpers read them: ``?datastar=`` on a GET
  or DELETE, the JSON body otherwise, and only from a request that Datastar made (it sends
  the header ``Datastar-Request``).
"""

from __future__ import annotations

import typing as t

from flask import request

from .events import Event

try:
    from datastar_py import ServerSentEventGenerator, _read_signals
    from datastar_py.consts import ElementPatchMode
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sse_flask.datastar needs datastar-py: pip install 'sse-flask[datastar]'"
    ) from e

if t.TYPE_CHECKING:
    from .extension import SSE

__all__ = ["from_frame", "patch_elements", "patch_signals", "publish", "read_signals"]


def from_frame(frame: str, id: str | None = None) -> Event:
    """Turn one frame written by datastar-py's ``ServerSentEventGenerator`` into an
    :class:`~sse_flask.Event` with its type and data (and ``id``, if given).

    :raises ValueError: if ``frame`` is not one event with a type.
    """
    event_type, data = None, []
    for line in frame.rstrip("\n").split("\n"):
        field, _, value = line.partition(": ")
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
        elif field not in ("id", "retry"):
            raise ValueError(f"not a line of a Datastar event: {line!r:.80}")
    if event_type is None:
        raise ValueError(f"a Datastar event needs a type: {frame!r:.80}")
    return Event(data="\n".join(data), event=event_type, id=id)


def patch_elements(
    elements: str | None = None,
    *,
    selector: str | None = None,
    mode: str | None = None,
    use_view_transition: bool | None = None,
    id: str | None = None,
) -> Event:
    """A ``datastar-patch-elements`` event: ``elements`` (HTML) patched into the page.

    :param selector: where; without it, Datastar matches each top-level element by its id.
    :param mode: ``outer`` (the default), ``inner``, ``replace``, ``prepend``, ``append``,
        ``before``, ``after`` or ``remove``.
    :param id: the event's id, for a view stream; a published event gets the broker's.
    :raises ValueError: if ``mode`` is not one of these.
    """
    frame = ServerSentEventGenerator.patch_elements(
        elements or "",
        selector=selector,
        mode=None if mode is None else ElementPatchMode(mode),
        use_view_transition=use_view_transition,
    )
    return from_frame(frame, id)


def patch_signals(
    signals: dict[str, t.Any] | str, *, only_if_missing: bool | None = None, id: str | None = None
) -> Event:
    """A ``datastar-patch-signals`` event: ``signals`` (a dict, or its JSON text) merged
    into the page's signals; with ``only_if_missing``, only those the page does not have."""
    return from_frame(
        ServerSentEventGenerator.patch_signals(signals, only_if_missing=only_if_missing), id
    )


def publish(sse: SSE, event: Event, *, channel: str | None = None) -> str:
    """Publish a Datastar ``event`` on ``channel``, as :meth:`SSE.publish` does; return its id."""
    return sse.publish(event.data, event=event.event, channel=channel)


def read_signals() -> dict[str, t.Any] | None:
    """The signals Datastar sent with the current request; ``None`` if it sent none.

    :raises ValueError: if they are not valid JSON (a ``400`` on the blueprint's routes).
    """
    try:
        signals = _read_signals(
            request.method,
            t.cast("t.Mapping[str, str]", request.headers),
            request.args,
            request.get_data(),
        )
    except ValueError as e:
        raise ValueError(f"the Datastar signals are not valid JSON: {e}") from None
    if signals is not None and not isinstance(signals, dict):
        raise ValueError(f"the Datastar signals must be a JSON object, got {signals!r:.80}")
    return signals
