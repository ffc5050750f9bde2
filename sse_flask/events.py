"""Encoding of server-sent events into bytes, as the WHATWG HTML standard parses them.

Pure functions and values, no Flask: this module is what a user streaming from their own
view needs, and what the brokers call once per published event.

Deliberate choices:

- ``data`` is split on CRLF, CR and LF only (not :meth:`str.splitlines`, which also splits
  on U+2028, U+0085 and friends that the SSE parser treats as ordinary characters), one
  ``data:`` line per line, so a conformant client rebuilds exactly the text published with
  its line breaks normalised to LF.
- Every field value is written after ``": "``: the parser strips exactly one leading space,
  so a value that itself starts with a space survives.
- ``event:`` is omitted for the default type ``message``, which saves bytes on every frame.
- An event type or id containing CR, LF or NUL is refused rather than escaped: a line break
  in either would let a publisher end the frame early and forge another one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import reprlib
import typing as t

__all__ = [
    "DEFAULT_EVENT",
    "Event",
    "encode_comment",
    "encode_data",
    "encode_event",
    "encode_retry",
    "prefix_id",
]

#: The event type a client reports when a frame has no ``event:`` line.
DEFAULT_EVENT = "message"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

_FORBIDDEN = re.compile(r"[\r\n\x00]")


@dataclasses.dataclass(frozen=True)
class Event:
    """One server-sent event, with fields named as on the wire.

    :param data: the payload. A :class:`str` is sent as it is; any other value is sent as
        its compact JSON text.
    :param event: the event type; ``None`` or ``"message"`` writes no ``event:`` line.
    :param id: the event id the client remembers and sends back as ``Last-Event-ID``.
    :param retry: the reconnection delay, in milliseconds, the client should use.
    """

    data: t.Any = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None


def encode_data(data: t.Any) -> str:
    """Return the text that ``data`` is sent as: itself if a string, else compact JSON.

    :raises ValueError: if ``data`` cannot be encoded as JSON or as UTF-8 (a lone
        surrogate, for instance).
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValueError(
                f"data must be a string or a JSON value, got {_quote(data)}: {e}"
            ) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"data must be valid Unicode text: {e.reason} at position {e.start}"
        ) from None
    return text


def check_field(name: str, value: str) -> str:
    """Return ``value`` if it is a safe ``event`` or ``id`` field value.

    :raises ValueError: if ``value`` is empty (for ``event``) or contains CR, LF or NUL.
    """
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r:.80}")
    if _FORBIDDEN.search(value):
        raise ValueError(f"{name} must not contain CR, LF or NUL: {value!r:.80}")
    if name == "event type" and not value:
        raise ValueError("event type must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} must be valid Unicode text: {value!r:.80}") from None
    return value


def encode_event(event: Event) -> bytes:
    """Encode ``event`` as one complete frame, ending with the blank line that dispatches it.

    :raises ValueError: if the event type or id contains CR, LF or NUL, the event type is
        empty, ``retry`` is not a non-negative integer, or the data cannot be encoded.
    """
    lines = []
    if event.id is not None:
        lines.append("id: " + check_field("event id", event.id))
    if event.event is not None and check_field("event type", event.event) != DEFAULT_EVENT:
        lines.append("event: " + event.event)
    if event.retry is not None:
        lines.append(_retry_line(event.retry))
    lines.extend("data: " + line for line in _LINE_BREAK.split(encode_data(event.data)))
    lines.append("\n")
    return "\n".join(lines).encode("utf-8")


def prefix_id(frame: bytes, id: str) -> bytes:
    """Return ``frame``, encoded without an id, with an ``id:`` line in front.

    Brokers encode an event once, before they know its id, and add the id here.
    """
    return b"id: " + check_field("event id", id).encode("utf-8") + b"\n" + frame


def encode_retry(milliseconds: int) -> bytes:
    """Encode a line that only sets the client's reconnection delay.

    Like a comment, it has no blank line after it: the field takes effect as it is read,
    and some clients (httpx-sse) would wrongly dispatch an empty event for a blank line.
    """
    return (_retry_line(milliseconds) + "\n").encode("ascii")


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line: clients ignore it, proxies see traffic on the connection.

    It has no blank line after it: none is needed, and some clients (httpx-sse) would
    wrongly dispatch an empty event for one.
    """
    return (": " + check_field("comment", text) + "\n").encode("utf-8")


def _quote(data: t.Any) -> str:
    """``data`` quoted for a message: cut short, and bounded in depth for deeply nested data,
    whose plain ``repr`` would itself recurse too deep."""
    try:
        return f"{data!r:.80}"
    except RecursionError:
        return reprlib.repr(data)


def _retry_line(milliseconds: int) -> str:
    if not isinstance(milliseconds, int) or isinstance(milliseconds, bool) or milliseconds < 0:
        raise ValueError(
            f"retry must be a non-negative integer of milliseconds, got {milliseconds!r}"
        )
    return f"retry: {milliseconds}"
