"""The standard library HTTP publisher and reader that ``sse-flask say`` and ``listen`` use,
so that they need nothing beyond click; what failed is raised as :class:`ClientError`, which
says whether trying again later may help.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import typing as t
import urllib.error
import urllib.parse
import urllib.request

#: What :func:`read_events` yields: event type, data, last event id, retry.
_Event = tuple[str | None, str, str | None, int | None]


class ClientError(Exception):
    """A request that failed, in one line for the user.

    :param transient: trying again later may succeed (the server is down or restarting,
        or answered 5xx); a bad URL, a name that does not resolve or a 4xx will not mend.
    :param retry_after: the seconds the server asked to wait, if it did.
    """

    def __init__(
        self, message: str, *, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


def base_url(url: str) -> str:
    """``url``, with ``http://`` put in front of a bare ``HOST:PORT`` (or ``HOST``).

    :raises ClientError: if it is not an http:// or https:// URL with a host and a valid port.
    """
    full = url if "://" in url else f"http://{url}"
    parts = urllib.parse.urlsplit(full)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        raise ClientError(f"{url!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"{url!r} is not an http:// or https:// URL, nor HOST:PORT")
    return full


def publish_over_http(
    url: str, data: str, *, event: str | None, channel: str | None, token: str | None
) -> str:
    """POST ``data`` to ``url``'s ``/say``; return the event's id.

    :raises ClientError: if the server could not be reached or refused the event.
    """
    fields = {"data": data, "event": event, "channel": channel}
    body = json.dumps({key: value for key, value in fields.items() if value is not None}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    say_url = url.rstrip("/") + "/say"
    request = urllib.request.Request(say_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["id"])
    except urllib.error.URLError as e:
        raise _failure(url, e, idempotent=False) from None
    except (OSError, http.client.HTTPException) as e:
        # Lost after the request went out: it may have been published, so not transient.
        message = f"{url} did not answer ({e!r}); the event may have been published"
        raise ClientError(message) from None


def events_url(url: str, channels: tuple[str, ...]) -> str:
    """The ``/events`` URL under ``url`` (unless it ends so already) for ``channels``."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path if parts.path.endswith("/events") else parts.path.rstrip("/") + "/events"
    query = urllib.parse.urlencode([("channel", channel) for channel in channels])
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _failure(url: str, error: urllib.error.URLError, *, idempotent: bool) -> ClientError:
    """``error`` from a request to ``url`` as a :class:`ClientError`, transient or not.

    A request that may be sent twice (``idempotent``) is worth repeating after any 5xx; a
    publish only after a 503 that says nothing was sent: not one that gives the event's
    ``id`` (written, but not confirmed by Redis replicas), which a retry would deliver twice.
    """
    if isinstance(error, urllib.error.HTTPError):
        retry_after = error.headers.get("Retry-After", "")
        answer = _error_answer(error)
        written = "id" in answer
        return ClientError(
            f"{url} answered {error.code}: {answer.get('error') or error.reason}",
            transient=error.code >= 500 if idempotent else error.code == 503 and not written,
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )
    reason = error.reason
    lasting = (
        not isinstance(reason, OSError)
        or isinstance(reason, ssl.SSLCertVerificationError)
        or (isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME)
    )
    return ClientError(f"cannot reach {url}: {reason}", transient=not lasting)


def _error_answer(error: urllib.error.HTTPError) -> dict[str, t.Any]:
    """The JSON object of an error answer (sse-flask's ``{"error": ...}``); empty if the
    body is not one."""
    try:
        answer = json.load(error)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def read_events(url: str, last_event_id: str | None) -> t.Iterator[_Event]:
    """Parse the stream at ``url`` as the WHATWG standard says a browser does.

    Yields ``(event type, data, last event id, retry)``: a dispatched event has a type;
    a ``retry:`` alone yields a type of ``None``.

    :raises ClientError: if the stream cannot be opened, is not an event stream, or is lost.
    """
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=None) as response:
            kind = response.headers.get_content_type()
            if kind != "text/event-stream":
                answer = f"{url} answered {response.status} with {kind}"
                raise ClientError(f"{answer}, not an event stream")
            yield from _parse(_lines(response), last_event_id)
    except urllib.error.URLError as e:
        raise _failure(url, e, idempotent=True) from None
    except (OSError, http.client.HTTPException) as e:
        raise ClientError(f"connection lost ({e!r})", transient=True) from None


def _parse(lines: t.Iterable[str], last_event_id: str | None) -> t.Iterator[_Event]:
    """The events in ``lines``, as :func:`read_events` yields them."""
    data: list[str] = []
    event_type = ""
    event_id = last_event_id
    for line in lines:
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
