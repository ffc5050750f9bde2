"""What the contract says a fuzzed request must be answered with: the statuses it may get,
and, for a publish the contract fixes, the data, channel and event type its answer names."""

from __future__ import annotations

import json
import re
import string
import typing as t
import urllib.parse

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)

MAX_DATA = 65536  # the default SSE_MAX_DATA_BYTES, which this server keeps
CHANNEL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.:@-")
#: Stands for the "hello N" that GET /say publishes when given no data.
HELLO = "hello <N>"


class Verdict(t.NamedTuple):
    statuses: frozenset[int]
    #: On 200: the data text a client receives, line breaks normalised to LF.
    text: str | None = None
    #: On 200: the channel and event type the answer must name.
    channel: str | None = None
    event: str | None = None


LENIENT = Verdict(frozenset({200, 400, 413}))


def valid_channel(channel: str) -> bool:
    return 1 <= len(channel) <= 128 and all(
        character in CHANNEL_CHARACTERS for character in channel
    )


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def publish_verdict(data: t.Any, event: t.Any, channel: t.Any) -> Verdict:
    """The contract's answer to publishing ``data`` with ``event`` on ``channel``."""
    bad = Verdict(frozenset({400}))
    if (event is not None and not isinstance(event, str)) or (
        channel is not None and not isinstance(channel, str)
    ):
        return bad
    if channel is not None and (not valid_channel(channel) or channel.startswith("job:")):
        return bad  # only a job publishes to its channel
    if event is not None and (event == "" or any(c in event for c in "\r\n\0") or not utf8(event)):
        return bad
    if isinstance(data, str):
        text = data
    else:
        try:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except RecursionError:
            return LENIENT  # as deep as the stack: the server's stack is not ours
        except (TypeError, ValueError):
            return bad
    if not utf8(text):
        return bad
    if len(text.encode("utf-8")) > MAX_DATA:
        return Verdict(frozenset({413}))
    return Verdict(
        frozenset({200}),
        re.sub(r"\r\n|\r|\n", "\n", text),
        channel or "default",
        event or "message",
    )


def json_verdict(body: bytes) -> Verdict:
    """The answer to POST /say of ``body`` as ``application/json``."""
    try:
        fields = json.loads(body)
    except RecursionError:
        return LENIENT
    except ValueError:
        return Verdict(frozenset({400}))
    if nesting(fields) > 500:
        return LENIENT  # whether it parses or encodes depends on how deep the server's stack is
    if not isinstance(fields, dict) or "data" not in fields:
        return Verdict(frozenset({400}))
    return publish_verdict(fields["data"], fields.get("event"), fields.get("channel"))


def nesting(value: t.Any) -> int:
    """How deep lists and dicts nest in ``value``."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        value, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, dict):
            pending.extend((item, depth + 1) for item in value.values())
    return deepest


def form_verdict(pairs: t.Sequence[tuple[str, str]]) -> Verdict:
    """The answer to a publish whose fields are ``pairs`` (first occurrence wins)."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    data = fields.get("data", fields.get("msg"))
    if data is None:
        return Verdict(frozenset({400}))
    return publish_verdict(data, fields.get("event"), fields.get("channel"))


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``query`` parsed as the server's framework does: UTF-8, invalid bytes left percent-encoded."""
    return urllib.parse.parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote")
