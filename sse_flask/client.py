"""The standard library HTTP publisher and reader that ``sse-flask say`` and ``listen`` use,
so that they need nothing beyond click.
"""

from __future__ import annotations

import json
import typing as t
import urllib.error
import urllib.parse
import urllib.request

import click

def publish_over_http(url: str, data: str, *, event: str | None, channel: str | None, token: str | None) -> str:
    fields = {"data": data, "event": event, "channel": channel}
    body = json.dumps({key: value for key, value in fields.items() if value is not None}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url.rstrip("/") + "/say", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["id"])
    except urllib.error.HTTPError as e:
        raise click.ClickException(f"{url} answered {e.code}: {error_text(e)}") from None
    except OSError as e:
        raise click.ClickException(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None


def error_text(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(error)["error"])
    except (ValueError, KeyError, TypeError):
        return error.reason


def events_url(url: str, channels: tuple[str, ...]) -> str:
    parts = urllib.parse.urlsplit(url)
    path = parts.path if parts.path.endswith("/events") else parts.path.rstrip("/") + "/events"
    query = urllib.parse.urlencode([("channel", channel) for channel in channels])
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def read_events(url: str, last_event_id: str | None) -> t.Iterator[tuple[str | None, str, str | None, int | None]]:
    """Parse the stream at ``url`` as the WHATWG standard says a browser does.

    Yields ``(event type, data, last event id, retry)``: a dispatched event has a type;
    a ``retry:`` alone yields a type of ``None``.
    """
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=None) as response:
        data: list[str] = []
        event_type = ""
        event_id = last_event_id
        for line in _lines(response):
            if not line:
                if data:
                    yield event_type or "message", "\n".join(data), event_id, None
                data, event_type = [], ""
                continue
            name, colon, value = line.partition(":")
            if not name and colon:
                continue
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id" and "\0" not in value:
                event_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                yield None, "", event_id, int(value)


def _lines(response: t.IO[bytes]) -> t.Iterator[str]:
    """Lines of ``response``, split on CRLF, CR or LF only, decoded as UTF-8, with a
    leading byte order mark dropped."""
    buffer = b""
    first = True
    while chunk := response.read1(65536):  # type: ignore[attr-defined]
        buffer += chunk
        # Hold a final CR back: the next chunk may start with the LF of the same CRLF.
        end = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        *lines, rest = buffer[:end].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        buffer = rest + buffer[end:]
        for line in lines:
            text = line.decode("utf-8", "replace")
            if first:
                text, first = text.removeprefix("\ufeff"), False
            yield text
