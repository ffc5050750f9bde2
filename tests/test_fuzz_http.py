"""Malformed heads over HTTP against the real server (helpers/fuzz.py): a property-based
fuzz (hypothesis) of header names and values, bytes and all, and of any method on any path,
2,200 cases in all. Every answer is checked against the rules of helpers/fuzz.py; the server
must serve normally afterwards.
"""

from __future__ import annotations

import string
import typing as t
import urllib.parse

import pytest
from helpers.fuzz import (
    AUTH,
    Fuzz,
    build,
    check_afterwards,
    check_counts,
    fuzz_settings,
    fuzzing,
    open_stream,
)
from helpers.fuzz_strategies import latin1_text
from helpers.fuzz_verdicts import Verdict
from hypothesis import given
from hypothesis import strategies as st

# A failing example with a 10 MB body would otherwise fail again, on the size of its repr.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

#: Headers that frame the HTTP message itself; the raw cases, not the header fuzz, vary them.
FRAMING = {
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
    "upgrade",
    "te",
    "http2-settings",
    "host",
    "keep-alive",
    "trailer",
}


@pytest.fixture(scope="module")
def fuzz(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> t.Iterator[Fuzz]:
    log = tmp_path_factory.mktemp("fuzz") / "gunicorn.log"
    with fuzzing([], log, request, "http ") as state:
        yield state


header_names = st.one_of(
    st.sampled_from(
        [
            "Last-Event-ID",
            "Authorization",
            "Content-Type",
            "Accept",
            "Origin",
            "Cookie",
            "X-Forwarded-For",
            "Cache-Control",
            "Accept-Encoding",
            "Range",
        ]
    ),
    st.text(
        string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=12
    ).filter(lambda name: name.lower() not in FRAMING),
    st.binary(min_size=0, max_size=8).filter(
        lambda name: name.lower().decode("latin-1") not in FRAMING
    ),
)
header_values = st.one_of(
    st.binary(max_size=60),
    latin1_text.map(lambda s: s.encode("latin-1")),
    st.sampled_from(
        [
            b"a\rb",
            b"a\nb",
            b"a\r\nb",
            b"a\r\n b",
            b"\r\n\r\nGET / HTTP/1.1",
            b"a\x00b",
            b"\xff\xfe",
            b"\xc3\xa9",
            b" x ",
            b"\t",
        ]
    ),
)


def test_fuzz_headers(fuzz: Fuzz) -> None:
    """Arbitrary header names and values, bytes and all: CR, LF, NUL, obs-text, invalid UTF-8,
    on /say, /events and /stats, each on its own connection."""

    @fuzz_settings(1200)
    @given(
        st.lists(st.tuples(header_names, header_values), min_size=1, max_size=4),
        st.sampled_from(
            [
                "/say?msg=h&channel=fuzz-headers",
                "/events?channel=fuzz-headers",
                "/stats",
                "/healthz",
            ]
        ),
        st.booleans(),
    )
    def case(headers: list[tuple[bytes | str, bytes]], path: str, authorized: bool) -> None:
        sent = [("Authorization", AUTH)] if authorized else []
        request = build("GET", path, [*sent, *headers])
        # What reaches the app depends on how gunicorn reads the bytes: any answer but a 5xx
        # or a traceback goes, and only the first answer counts (an injected blank line ends
        # the head early; the rest would be read as another request).
        if path.startswith("/events"):
            answer, first = open_stream(fuzz.server.port, request)
            fuzz.check_stream("headers", answer, first, Verdict(frozenset({200, 400})))
        else:
            answer, _ = open_stream(fuzz.server.port, request)
            # An Origin not the server's own is another site's: /say refuses it (403).
            names = {(n if isinstance(n, str) else n.decode("latin-1")).lower() for n, _ in headers}
            cross_site = path.startswith("/say") and bool(names & {"origin", "sec-fetch-site"})
            statuses = {200, 400, 401} | ({403} if cross_site else set())
            fuzz.check("headers", answer, Verdict(frozenset(statuses)))

    case()
    fuzz.finished.add("headers")


def test_fuzz_methods_and_paths(fuzz: Fuzz) -> None:
    """Any method on any path: unknown routes, wrong methods, traversal, NUL, odd encodings."""

    @fuzz_settings(1000)
    @given(
        st.one_of(
            st.sampled_from(
                [
                    "GET",
                    "POST",
                    "PUT",
                    "DELETE",
                    "PATCH",
                    "OPTIONS",
                    "HEAD",
                    "TRACE",
                    "CONNECT",
                    "PROPFIND",
                    "get",
                ]
            ),
            st.text(string.ascii_letters + "!#$%&'*+-.^_`|~", min_size=1, max_size=10),
        ),
        st.one_of(
            st.sampled_from(
                [
                    "/",
                    "/say",
                    "/events",
                    "/stats",
                    "/healthz",
                    "/metrics",
                    "/sse-flask.js",
                    "/static/demo.js",
                    "/static/../setup.cfg",
                    "/static/%2e%2e/%2e%2e/etc/passwd",
                    "//say",
                    "/say/",
                    "/events/",
                    "/say%00",
                    "/%ff",
                    "/%",
                    "/%zz",
                    "*",
                    "/say;x",
                    "/..",
                    "/static/",
                    "/events?channel=fuzz-paths",
                ]
            ),
            st.binary(max_size=30).map(
                lambda b: "/" + urllib.parse.quote_from_bytes(b, safe="/;,=")
            ),
        ),
        st.binary(max_size=40),
    )
    def case(method: str, path: str, body: bytes) -> None:
        if path.startswith("/events") and method.upper() in ("GET", "HEAD"):
            answer, first = open_stream(
                fuzz.server.port, build(method, path, [("Authorization", AUTH)]), method.upper()
            )
            head = method.upper() == "HEAD"
            fuzz.check_stream(
                "methods-paths",
                answer,
                b"retry:" if head else first,
                Verdict(frozenset({200, 308, 400, 404, 405})),
                head=head,
            )
            return
        request = build(
            method,
            path,
            [("Authorization", AUTH), ("Content-Type", "application/octet-stream")],
            body,
        )
        # A fresh connection each time: after CONNECT or an odd method, what follows on a
        # kept-alive connection would be the server's guess.
        answer, _ = open_stream(fuzz.server.port, request, method.upper())
        fuzz.check(
            "methods-paths",
            answer,
            Verdict(frozenset({200, 204, 301, 308, 400, 404, 405})),
            head=method.upper() == "HEAD",
        )

    case()
    fuzz.finished.add("methods-paths")


#: The hypothesis tests of this module, by the name each counts its cases under.
FUZZ_TESTS = {"headers", "methods-paths"}


def test_server_serves_normally_afterwards(fuzz: Fuzz) -> None:
    """After all of the above, :func:`~helpers.fuzz.check_afterwards`; and, when every fuzz
    test of the module ran, at least 2,100 cases did, and each reached the app often enough."""
    check_afterwards(fuzz)
    check_counts(fuzz, FUZZ_TESTS, 2_100)
