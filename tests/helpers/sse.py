"""Clients of an event stream: httpx-sse, a parser we did not write, and a raw socket, for
exact bytes, for clients that misbehave, and for many streams read from one selector."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import typing as t

import httpx
import httpx_sse

_RETRY = re.compile(rb"retry: (\d+)")


class StreamClient:
    """An event stream read with httpx-sse."""

    def __init__(
        self,
        url: str,
        *,
        channels: t.Sequence[str] = (),
        last_event_id: str | None = None,
        params: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        query = [("channel", channel) for channel in channels] + list((params or {}).items())
        self._client = httpx.Client(timeout=httpx.Timeout(timeout))
        self._context = httpx_sse.connect_sse(
            self._client, "GET", url + "/events", params=query, headers=headers
        )
        self.source = self._context.__enter__()
        self.response = self.source.response
        self._events = self.source.iter_sse()
        self.retry: int | None = None

    def take(self, count: int) -> list[httpx_sse.ServerSentEvent]:
        """The next ``count`` events; the last ``retry:`` seen is kept in :attr:`retry`."""
        events = [next(self._events) for _ in range(count)]
        for event in events:
            if event.retry is not None:
                self.retry = event.retry
        return events

    def rest(self) -> list[httpx_sse.ServerSentEvent]:
        """Every event a browser would dispatch until the server ends the stream."""
        events = []
        with contextlib.suppress(StopIteration):
            while True:
                events.extend(self.take(1))
        return events

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawStream:
    """A GET over a plain socket, its response decoded as it arrives.

    :attr:`received` holds every byte of the response; the head gives :attr:`status` and
    :attr:`headers`; :attr:`body` is de-chunked, or read up to its Content-Length, or, with
    neither (an HTTP/1.0 stream), until the connection closes. The body's lines are read as
    a browser reads them (the server ends each line with LF and each frame with a blank
    line): :meth:`frames`, :meth:`events`, :meth:`comments`, :attr:`last_event_id`.
    """

    def __init__(
        self,
        port: int,
        path: str = "/events",
        headers: dict[str, str] | None = None,
        *,
        version: str = "HTTP/1.1",
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.opened_at = time.monotonic()
        #: The id a browser would resume from: the last one received, else the one sent.
        self.last_event_id = (headers or {}).get("Last-Event-ID")
        self._reset()
        lines = [
            f"GET {path} {version}",
            "Host: 127.0.0.1",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
            "",
            "",
        ]
        self.sock.sendall("\r\n".join(lines).encode())

    def _reset(self) -> None:
        self.received = b""
        #: No more bytes will come: the connection closed, at either end.
        self.eof = False
        #: The response has ended: its terminating chunk, or its Content-Length, arrived.
        self.ended = False
        #: The stream's opening ``retry:``, which comes with the replay in one write.
        self.retry: int | None = None
        #: When the last comment line (a heartbeat) arrived, on the monotonic clock.
        self.heartbeat_at = 0.0
        self._status: int | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._offset = -1  # where the next undecoded body byte (or chunk-size line) starts
        self._next = -1  # where the next response starts in ``received``, once this one ended
        self._partial = b""  # the body's incomplete last line
        self._first_line = True
        self._lines: list[bytes] = []  # the frame being read, without its comment lines
        self._frames: list[bytes] = []
        self._events: list[dict[str, t.Any]] = []
        self._comments: list[bytes] = []

    def reuse(self, path: str = "/events") -> RawStream:
        """Send another request on this connection, kept alive after this response ended, as
        a browser's connection pool does; return its response."""
        assert self.ended, "the response has not ended"
        again = RawStream.__new__(RawStream)
        again.sock, again.opened_at, again.last_event_id = self.sock, time.monotonic(), None
        again._reset()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        again.feed(self.received[self._next :])
        return again

    # reading

    def pump(self, timeout: float) -> bool:
        """Receive what arrives within ``timeout`` seconds; ``False`` on time-out or EOF."""
        if self.eof:
            return False
        self.sock.settimeout(max(0.01, timeout))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.feed(chunk)
        return True

    def feed(self, chunk: bytes) -> None:
        self.received += chunk
        self._decode()

    def read_until(self, marker: bytes, timeout: float = 10, count: int = 1) -> bytes:
        """Read until ``marker`` has been received ``count`` times; return everything
        received so far."""
        deadline = time.monotonic() + timeout
        while self.received.count(marker) < count:
            remaining = deadline - time.monotonic()
            if self.eof:
                raise AssertionError(
                    f"connection closed before {marker!r}; received {self.received[-500:]!r}"
                )
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {marker!r}; received {self.received[-500:]!r}"
                )
            self.pump(remaining)
        return self.received

    def wait_for(
        self, predicate: t.Callable[[RawStream], t.Any], timeout: float = 10, what: str = ""
    ) -> t.Any:
        """Read until ``predicate(self)`` is true; return its value."""
        deadline = time.monotonic() + timeout
        while not (result := predicate(self)):
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0:
                state = "the connection closed" if self.eof else f"timed out after {timeout} s"
                raise AssertionError(
                    f"waiting for {what or predicate}: {state}; body so far {self.body[-800:]!r}"
                )
            self.pump(min(remaining, 0.2))
        return result

    def wait_closed(self, timeout: float) -> None:
        """Until the response ends (terminating chunk) or the connection closes."""
        self.wait_for(lambda stream: stream.ended or stream.eof, timeout, "the stream to end")

    def close(self) -> None:
        self.sock.close()
        self.eof = True

    # decoding

    @property
    def head(self) -> bytes:
        return self.received.partition(b"\r\n\r\n")[0]

    @property
    def status(self) -> int | None:
        """The response's status, once its head has arrived."""
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        """The response's headers, names in lower case (empty until the head has arrived)."""
        return self._headers

    @property
    def body(self) -> bytes:
        return b"".join(self._body)

    def frames(self) -> list[bytes]:
        """Complete frames, without their final blank line, without comment lines and
        without the stream's opening ``retry:`` line, which has no blank line of its own."""
        return list(self._frames)

    def events(self) -> list[dict[str, t.Any]]:
        """Frames that a browser dispatches (those with data), as their fields, in order.
        ``lines`` keeps each frame's lines as sent."""
        return list(self._events)

    def data(self, event: str = "message") -> list[t.Any]:
        """The JSON data of the events of type ``event``, in order."""
        return [json.loads(e["data"]) for e in self._events if e.get("event", "message") == event]

    def comments(self) -> list[bytes]:
        """Complete comment lines (heartbeats); a data: line never starts with a colon."""
        return list(self._comments)

    def _decode(self) -> None:
        data = self.received
        if self._offset < 0:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return
            self._offset = end + 4
            head = data[:end]
            self._status = int(head.split(b" ", 2)[1])
            self._headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (
                    line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:]
                )
            }
        if self.ended:
            return
        if "transfer-encoding" not in self._headers:
            self.ended = self._unchunked()
            return
        assert self._headers["transfer-encoding"] == "chunked", self.head
        while not self.ended:
            line_end = data.find(b"\r\n", self._offset)
            if line_end < 0:
                return
            size = int(data[self._offset : line_end].split(b";")[0], 16)
            start = line_end + 2
            if len(data) < start + size + 2:
                return
            assert data[start + size : start + size + 2] == b"\r\n", data[
                start + size - 20 : start + size + 20
            ]
            if size == 0:
                self.ended = True
                self._next = start + 2  # no trailers
                return
            self._take(data[start : start + size])
            self._offset = start + size + 2

    def _unchunked(self) -> bool:
        """Take a body that is not chunked: up to its Content-Length (none without one, for
        204 and 304), else all there is, up to the connection's close; whether the response
        has ended by its length."""
        data = self.received
        length = self._headers.get("content-length")
        if length is None and self._status not in (204, 304):
            self._take(data[self._offset :])
            self._offset = len(data)
            return False
        end = self._offset + int(length or "0")
        if len(data) < end:
            return False
        self._take(data[self._offset : end])
        self._offset = self._next = end
        return True

    def _take(self, piece: bytes) -> None:
        """Body bytes, read line by line as a browser reads them."""
        if not piece:
            return
        self._body.append(piece)
        *lines, self._partial = (self._partial + piece).split(b"\n")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        first, self._first_line = self._first_line, False
        if first and (retry := _RETRY.fullmatch(line)):
            self.retry = int(retry[1])
        elif line.startswith(b":"):
            self._comments.append(line)
            self.heartbeat_at = time.monotonic()
        elif line:
            self._lines.append(line)
        elif self._lines:
            frame, self._lines = b"\n".join(self._lines), []
            self._frames.append(frame)
            self._dispatch(frame)

    def _dispatch(self, frame: bytes) -> None:
        lines = frame.decode("utf-8").split("\n")
        fields: dict[str, t.Any] = {"lines": lines, "data": []}
        for line in lines:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                fields["data"].append(value)
            elif name != "lines":
                fields[name] = value
        if "id" in fields:
            self.last_event_id = fields["id"]
        if fields["data"]:
            fields["data"] = "\n".join(fields["data"])
            self._events.append(fields)
