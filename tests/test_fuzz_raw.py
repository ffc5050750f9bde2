"""Raw-socket requests against the real server (helpers/fuzz.py), hand-written because no
HTTP library would send them: CR and LF in headers, invalid UTF-8 in the request line, 10 MB
bodies, 100,000-deep JSON, broken chunked framing, a body shorter than its length, pipelined
requests, and requests trickled a few bytes at a time. Every answer is checked against the
rules of helpers/fuzz.py; the server must serve normally afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
import time
import typing as t

import pytest
from helpers.fuzz import AUTH, TIMEOUT, TOKEN, Answer, Fuzz, build, check_afterwards, fuzzing
from helpers.fuzz_verdicts import Verdict


@pytest.fixture(scope="module")
def fuzz(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> t.Iterator[Fuzz]:
    log = tmp_path_factory.mktemp("fuzz") / "gunicorn.log"
    with fuzzing([], log, request, "raw ") as state:
        yield state


TEN_MB = 10 * 1024 * 1024
DEEP = 100_000


def chunked(body: bytes, size: int = 1 << 20) -> bytes:
    return (
        b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
            for i in range(0, len(body), size)
        )
        + b"0\r\n\r\n"
    )


def say_head(content_type: bytes = b"application/json", *extra: bytes) -> bytes:
    return (
        b"POST /say HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
        + AUTH.encode()
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\n"
        + b"".join(extra)
    )


def say_raw(
    body: bytes, content_type: bytes = b"application/json", *, framing: str = "length"
) -> bytes:
    """POST /say of ``body``, framed by its length or chunked."""
    if framing == "chunked":
        return say_head(content_type, b"Transfer-Encoding: chunked\r\n\r\n") + chunked(body)
    return say_head(content_type, b"Content-Length: %d\r\n\r\n" % len(body)) + body


class RawCase(t.NamedTuple):
    request: bytes
    statuses: frozenset[int]
    #: Declared answer of gunicorn's rather than the app's (see GUNICORN_REFUSALS).
    gunicorn: frozenset[int] = frozenset()
    method: str = "GET"


def raw(
    request: bytes, *statuses: int, gunicorn: t.Iterable[int] = (), method: str = "GET"
) -> RawCase:
    return RawCase(request, frozenset(statuses), frozenset(gunicorn), method)


TEN_MB_JSON = b'{"data": "' + b"a" * TEN_MB + b'"}'
TEN_MB_FORM = b"data=" + b"a" * TEN_MB
RAW_CASES = {
    # CR and LF where a header value should be: gunicorn refuses them, so no forged header.
    "bare-CR-in-header": raw(
        b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\rX-Forged: y\r\n\r\n", gunicorn=[400]
    ),
    "bare-LF-in-header": raw(
        b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\nX-Forged: y\r\n\r\n", gunicorn=[400]
    ),
    "bare-LF-line-ends": raw(b"GET /stats HTTP/1.1\nHost: x\n\n", gunicorn=[400]),
    "CR-in-authorization": raw(
        b"GET /say?msg=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\r\n\r\n",
        200,
        401,
        gunicorn=[400],
    ),
    "obs-fold": raw(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", gunicorn=[400]),
    "NUL-in-header": raw(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", gunicorn=[400]),
    "percent-CRLF-in-event": raw(
        b"GET /say?msg=x&event=a%0D%0Adata:%20forged HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + AUTH.encode()
        + b"\r\n\r\n",
        400,
    ),
    # Invalid UTF-8 in the request line and headers.
    "utf8-in-query": raw(b"GET /say?msg=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400, gunicorn=[400]),
    "utf8-in-path": raw(b"GET /ev\xffents HTTP/1.1\r\nHost: x\r\n\r\n", 404, gunicorn=[400]),
    "utf8-in-method": raw(b"G\xffT /stats HTTP/1.1\r\nHost: x\r\n\r\n", 405, gunicorn=[400]),
    "utf8-in-header-name": raw(
        b"GET /stats HTTP/1.1\r\nHost: x\r\nX-\xff: a\r\n\r\n", 200, gunicorn=[400]
    ),
    "utf8-in-last-event-id": raw(
        b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe\xc3-\xed\xa0\x80\r\n\r\n",
        200,
        gunicorn=[400],
    ),
    "utf8-in-authorization": raw(
        b"GET /say?msg=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        401,
        gunicorn=[400],
    ),
    "utf8-in-channel": raw(b"GET /events?channel=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    # 10 MB bodies, with a length and chunked.
    "10MB-json": raw(say_raw(TEN_MB_JSON), 413, method="POST"),
    "10MB-json-chunked": raw(say_raw(TEN_MB_JSON, framing="chunked"), 413, method="POST"),
    "10MB-form": raw(
        say_raw(TEN_MB_FORM, b"application/x-www-form-urlencoded"), 413, method="POST"
    ),
    "10MB-form-chunked": raw(
        say_raw(TEN_MB_FORM, b"application/x-www-form-urlencoded", framing="chunked"),
        413,
        method="POST",
    ),
    "10MB-multipart": raw(
        say_raw(
            b'--b\r\nContent-Disposition: form-data; name="data"\r\n\r\n' + b"a" * TEN_MB,
            b"multipart/form-data; boundary=b",
        ),
        413,
        method="POST",
    ),
    "10MB-on-events": raw(
        b"GET /events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % TEN_MB + b"a" * TEN_MB,
        200,
    ),
    "10MB-on-stats": raw(
        b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % TEN_MB + b"a" * TEN_MB,
        200,
    ),
    "huge-content-length": raw(
        say_head(b"application/json", b"Content-Length: 100000000000000000000\r\n\r\n") + b"{}",
        413,
        gunicorn=[400],
        method="POST",
    ),
    # 100,000-deep JSON.
    "deep-data-arrays": raw(
        say_raw(b'{"data": ' + b"[" * DEEP + b"]" * DEEP + b"}"), 400, method="POST"
    ),
    "deep-objects": raw(say_raw(b'{"":' * DEEP + b"1" + b"}" * DEEP), 400, method="POST"),
    "deep-event": raw(
        say_raw(b'{"data": 1, "event": ' + b"[" * DEEP + b"]" * DEEP + b"}"), 400, method="POST"
    ),
    "deep-chunked": raw(
        say_raw(b'{"data": ' + b"[" * DEEP + b"]" * DEEP + b"}", framing="chunked"),
        400,
        method="POST",
    ),
    # As form data, the brackets are just text, over the data limit.
    "deep-form": raw(
        say_raw(b"data=" + b"[" * DEEP + b"]" * DEEP, b"application/x-www-form-urlencoded"),
        413,
        method="POST",
    ),
    # Framing: chunked bodies the app reads and finds broken; lengths that disagree.
    "bad-chunk-size": raw(
        say_head(b"application/json", b"Transfer-Encoding: chunked\r\n\r\n")
        + b"zz\r\n{}\r\n0\r\n\r\n",
        400,
        gunicorn=[400],
        method="POST",
    ),
    "bad-chunk-extension": raw(
        say_head(b"application/json", b"Transfer-Encoding: chunked\r\n\r\n")
        + b'd;x\x00=y\r\n{"data": "x"}\r\n0\r\n\r\n',
        400,
        gunicorn=[400],
        method="POST",
    ),
    "chunk-without-terminator": raw(
        say_head(b"application/x-www-form-urlencoded", b"Transfer-Encoding: chunked\r\n\r\n")
        + b"3\r\ndata=x\r\n0\r\n\r\n",
        400,
        gunicorn=[400],
        method="POST",
    ),
    # RFC 9112, 6.1: a server that does not understand a transfer coding answers 501.
    # gunicorn says so itself, before the app; the one 5xx allowed here, and not the app's.
    "unknown-transfer-coding": raw(
        say_head(b"application/json", b"Transfer-Encoding: gzip\r\n") + b"\r\n",
        gunicorn=[400, 501],
        method="POST",
    ),
    "length-and-chunked": raw(
        say_head(b"application/json", b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")
        + b"\r\n0\r\n\r\n",
        gunicorn=[400],
        method="POST",
    ),
    "two-lengths": raw(
        say_head(b"application/json", b"Content-Length: 3\r\nContent-Length: 4\r\n") + b"\r\nabcd",
        gunicorn=[400],
        method="POST",
    ),
    "negative-length": raw(
        say_head(b"application/json", b"Content-Length: -1\r\n") + b"\r\n",
        gunicorn=[400],
        method="POST",
    ),
    "expect-unknown": raw(
        say_head(b"application/json", b"Expect: foo\r\nContent-Length: 0\r\n") + b"\r\n",
        gunicorn=[417],
        method="POST",
    ),
    "expect-100-continue": raw(
        say_head(b"application/json", b"Expect: 100-continue\r\nContent-Length: 13\r\n")
        + b'\r\n{"data": "x"}',
        200,
        method="POST",
    ),
    "multipart-garbage": raw(
        say_raw(b"--zz\r\n\x00\xff\r\n--zz--", b"multipart/form-data; boundary=zz"),
        400,
        method="POST",
    ),
    "multipart-no-boundary": raw(
        say_raw(b"data=xyz\r", b"multipart/form-data"), 400, method="POST"
    ),
    # Request lines and heads gunicorn refuses.
    "http-0.9": raw(b"GET /\r\n\r\n", gunicorn=[400]),
    "http2-preface": raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", gunicorn=[400]),
    "h2c-upgrade": raw(
        b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        200,
        gunicorn=[400],
    ),
    "long-request-line": raw(
        b"GET /say?msg=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", gunicorn=[414]
    ),
    "long-header": raw(
        b"GET /stats HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", gunicorn=[431]
    ),
    "many-headers": raw(
        b"GET /stats HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(200))
        + b"\r\n",
        gunicorn=[431],
    ),
    "absolute-form": raw(b"GET http://elsewhere.example/stats HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "http-1.0-no-host": raw(
        b"GET /say?msg=old&channel=fuzz-raw HTTP/1.0\r\nAuthorization: "
        + AUTH.encode()
        + b"\r\n\r\n",
        200,
    ),
    "unknown-version": raw(b"GET /stats HTTP/1.7\r\nHost: x\r\n\r\n", 200, gunicorn=[400]),
    # Resume ids the app must answer with a stream (``missed`` when unknown), whatever they hold.
    "last-event-id-5000-digits": raw(
        b"GET /events?channel=fuzz-raw HTTP/1.1\r\nHost: x\r\nLast-Event-ID: EPOCH-"
        + b"9" * 5000
        + b"\r\n\r\n",
        200,
    ),
    "last-event-id-7000-digits-alone": raw(
        b"GET /events?channel=fuzz-raw HTTP/1.1\r\nHost: x\r\nLast-Event-ID: "
        + b"1" * 7000
        + b"\r\n\r\n",
        200,
    ),
}


def exchange_raw(port: int, request: bytes, method: str) -> tuple[Answer | None, bytes]:
    """Send ``request`` from a thread (a 10 MB body need not be read before the answer comes)
    and read one answer; ``None`` if the server closed the connection without one."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(request)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None, b""
        if response.status == 200 and response.msg.get("Content-Type", "").startswith(
            "text/event-stream"
        ):
            return Answer(response.status, response.msg, b""), response.read1(65536)
        return Answer(response.status, response.msg, response.read()), b""
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(TIMEOUT)


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_raw_requests(fuzz: Fuzz, name: str) -> None:
    """Header values with bare CR or LF, invalid UTF-8 in the request line and headers, 10 MB
    bodies, 100,000-deep JSON, broken chunked framing: a 4xx from the app as JSON, or
    gunicorn's refusal of malformed HTTP; never a 5xx from the app."""
    case = RAW_CASES[name]
    request = case.request.replace(b"EPOCH", fuzz.epoch.encode())
    answer, first = exchange_raw(fuzz.server.port, request, case.method)
    assert answer is not None, "the server closed the connection without an answer"
    if answer.from_gunicorn:
        fuzz.cases["raw"] += 1
        assert answer.status in case.gunicorn, f"gunicorn refused it: {answer.describe()}"
        return
    if request.split(b" ", 2)[1].startswith(b"/events"):
        fuzz.check_stream("raw", answer, first, Verdict(case.statuses))
    else:
        fuzz.check("raw", answer, Verdict(case.statuses))


def test_body_shorter_than_its_length(fuzz: Fuzz) -> None:
    """A client that announces 100 bytes, sends 12 and stops sending: a 400 (or no answer, the
    client having gone), and no traceback in the log (checked at the end)."""
    sock = socket.create_connection(("127.0.0.1", fuzz.server.port), timeout=TIMEOUT)
    try:
        sock.sendall(
            say_head(b"application/json", b"Content-Length: 100\r\n\r\n") + b'{"data": "x"'
        )
        sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method="POST")
        with contextlib.suppress(http.client.RemoteDisconnected, ConnectionResetError):
            response.begin()
            fuzz.check(
                "raw",
                Answer(response.status, response.msg, response.read()),
                Verdict(frozenset({400})),
            )
    finally:
        sock.close()


def test_pipelined_requests(fuzz: Fuzz) -> None:
    """Three requests in one write, a bad one between two good ones: three answers, in order."""
    good = build("GET", "/say?msg=pipelined&channel=fuzz-raw", [("Authorization", AUTH)])
    bad = build("GET", "/say?msg=x&channel=a%20b", [("Authorization", AUTH)])
    last = good.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    received = bytearray()
    with socket.create_connection(("127.0.0.1", fuzz.server.port), timeout=TIMEOUT) as sock:
        sock.sendall(good + bad + last)
        while chunk := sock.recv(65536):
            received += chunk
    answers = Replay(bytes(received))
    statuses = []
    for _ in range(3):
        response = http.client.HTTPResponse(answers, method="GET")  # type: ignore[arg-type]
        response.begin()
        answer = Answer(response.status, response.msg, response.read())
        fuzz.check(
            "raw", answer, Verdict(frozenset({200, 400}), "pipelined", "fuzz-raw", "message")
        )
        statuses.append(answer.status)
    assert statuses == [200, 400, 200]
    assert answers.buffer.read() == b""


class Replay:
    """Bytes received, read one answer after another by ``http.client`` as if from a socket."""

    class _Unclosed(io.BytesIO):
        def close(self) -> None:
            pass  # http.client closes what it read an answer from; the next answer follows

    def __init__(self, received: bytes) -> None:
        self.buffer = self._Unclosed(received)

    def makefile(self, mode: str) -> io.BytesIO:
        return self.buffer


def trickle(port: int, request: bytes, *, step: int, pause: float, results: list[t.Any]) -> None:
    """Send ``request`` ``step`` bytes every ``pause`` seconds, then read the answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(request), step):
                sock.sendall(request[start : start + step])
                time.sleep(pause)
            response = http.client.HTTPResponse(sock, method="GET")
            response.begin()
            results.append(Answer(response.status, response.msg, response.read()))
    except (OSError, http.client.HTTPException) as e:
        results.append(e)


def test_trickled_requests_do_not_hold_up_others(fuzz: Fuzz) -> None:
    """Requests trickled a few bytes every 50 ms, one for about 2 s and one past gunicorn's
    5 s keep-alive timeout for reading a request head: while they trickle, everyone else is
    served at once. The first is then answered; the second is answered or dropped by gunicorn,
    never with a 5xx."""
    quick = build("GET", "/say?msg=trickled&channel=fuzz-raw", [("Authorization", AUTH)])
    slow = build(
        "GET",
        "/say?msg=too-slow&channel=fuzz-raw",
        [("Authorization", AUTH), ("X-Padding", "p" * 300)],
    )
    results: dict[str, list[t.Any]] = {"quick": [], "slow": []}
    threads = [
        threading.Thread(
            target=trickle,
            args=(fuzz.server.port, quick),
            kwargs={"step": 4, "pause": 0.05, "results": results["quick"]},
        ),
        threading.Thread(
            target=trickle,
            args=(fuzz.server.port, slow),
            kwargs={"step": 3, "pause": 0.05, "results": results["slow"]},
        ),
    ]
    for thread in threads:
        thread.start()
    served = 0
    while any(thread.is_alive() for thread in threads):
        started = time.monotonic()
        answer = fuzz.wire.exchange(build("GET", "/stats"))
        fuzz.check("trickle", answer, Verdict(frozenset({200})))
        assert time.monotonic() - started < 5, "a trickled request held up the others"
        served += 1
        threads[1].join(0.05)  # the slow one ends last
    for thread in threads:
        thread.join()
    assert served >= 10
    [quick_answer] = results["quick"]
    assert isinstance(quick_answer, Answer), quick_answer
    fuzz.check(
        "trickle", quick_answer, Verdict(frozenset({200}), "trickled", "fuzz-raw", "message")
    )
    [slow_answer] = results["slow"]
    if isinstance(slow_answer, Answer):
        assert slow_answer.status < 500, slow_answer.describe()


def test_server_serves_normally_afterwards(fuzz: Fuzz) -> None:
    """After all of the above, :func:`~helpers.fuzz.check_afterwards`."""
    check_afterwards(fuzz)
