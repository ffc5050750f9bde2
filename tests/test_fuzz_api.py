"""Hostile input to the HTTP API against the real server (helpers/fuzz.py): a property-based
fuzz (hypothesis) of ``POST /say`` with JSON, form and other bodies, of ``GET /say`` with any
query string, of ``GET /events`` with any channels and resume ids (ids this server issued
included), and of the ``Authorization`` header, 8,400 cases in all, on one server in this
order. Every answer is checked against the rules of helpers/fuzz.py and, where the contract
fixes it, its status and what it published; the server must serve normally afterwards.
"""

from __future__ import annotations

import string
import typing as t
import urllib.parse

import pytest
from helpers.fuzz import (
    AUTH,
    TOKEN,
    WITNESS,
    Fuzz,
    build,
    check_afterwards,
    check_counts,
    events_case,
    fuzz_settings,
    fuzzing,
)
from helpers.fuzz_strategies import (
    any_text,
    events_arguments,
    json_bodies,
    json_types,
    latin1_text,
    long_text,
)
from helpers.fuzz_verdicts import (
    HELLO,
    LENIENT,
    Verdict,
    form_verdict,
    json_verdict,
    publish_verdict,
    query_pairs,
    utf8,
)
from hypothesis import given
from hypothesis import strategies as st

# A failing example with a 10 MB body would otherwise fail again, on the size of its repr.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


other_types = st.sampled_from(
    [
        None,
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=fuzz",
        "multipart/form-data",
        "application/xml",
        "text/json",
        "*/*",
        "",
    ]
)
form_names = st.sampled_from(["data", "msg", "event", "channel", "data", "x", ""]) | st.text(
    max_size=6
)
form_values = st.one_of(
    any_text.filter(utf8),
    st.sampled_from(["", WITNESS, "news", "message"]),
    any_text.filter(utf8),
    long_text,
)


def percent_encoded(value: bytes, how: str) -> str:
    if how == "quote":
        return urllib.parse.quote_from_bytes(value, safe="")
    if how == "plus":
        return urllib.parse.quote_plus(value, safe="")
    # Raw where gunicorn takes it (visible ASCII but space and '#'), encoded elsewhere.
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in b"#%" else f"%{b:02X}" for b in value)


query_values = st.one_of(
    st.binary(max_size=30),
    st.text(max_size=30).map(lambda s: s.encode("utf-8")),
    st.sampled_from(
        [
            b"",
            WITNESS.encode(),
            b"news",
            b"a\r\nevent: forged",
            b"\xff\xfe",
            b"\xed\xa0\x80",
            b"%zz",
            b"%",
            b"x" * 129,
        ]
    ),
)
query_names = st.one_of(
    st.sampled_from(["msg", "data", "channel", "event", "msg", "channel"]),
    st.text(string.ascii_letters + "_[]", max_size=5),
)


@st.composite
def query_strings(draw: st.DrawFn, names: st.SearchStrategy[str] = query_names) -> str:
    pairs = draw(
        st.lists(
            st.tuples(names, query_values, st.sampled_from(["quote", "plus", "raw"])), max_size=5
        )
    )
    parts = [
        f"{urllib.parse.quote(name)}={percent_encoded(value, how)}" for name, value, how in pairs
    ]
    junk = draw(
        st.sampled_from(["", "", "", "&", "&&", "=", "&=x", "x", "%", "%zz", "&msg", "&channel="])
    )
    return "&".join(parts) + junk


@pytest.fixture(scope="module")
def fuzz(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> t.Iterator[Fuzz]:
    log = tmp_path_factory.mktemp("fuzz") / "gunicorn.log"
    with fuzzing([], log, request, "api ") as state:
        yield state


def test_fuzz_say_json_bodies(fuzz: Fuzz) -> None:
    """POST /say with JSON: arbitrary values and fields, huge numbers, NaN, deep nesting, lone
    surrogates (escaped and raw), UTF-16/32 and truncated bodies."""

    @fuzz_settings(2600)
    @given(json_bodies(), json_types)
    def case(body: bytes, content_type: str) -> None:
        headers = [("Authorization", AUTH), ("Content-Type", content_type)]
        answer = fuzz.wire.exchange(build("POST", "/say", headers, body), "POST")
        fuzz.check("json", answer, json_verdict(body), body=body)

    case()
    fuzz.finished.add("json")


def test_fuzz_say_other_bodies(fuzz: Fuzz) -> None:
    """POST /say with form fields, multipart, arbitrary bytes, and any content type."""

    @fuzz_settings(1500)
    @given(
        st.sampled_from(["form", "form", "bytes", "json-bytes", "multipart"]),
        st.lists(st.tuples(form_names, form_values), max_size=5),
        st.binary(max_size=300),
        other_types,
        json_types,
    )
    def case(
        kind: str, pairs: list[tuple[str, str]], junk: bytes, other_type: str | None, json_type: str
    ) -> None:
        headers = [("Authorization", AUTH)]
        verdict = LENIENT
        if kind == "form":
            body = urllib.parse.urlencode(pairs).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            verdict = form_verdict(pairs)
        elif kind == "json-bytes":
            body = junk
            headers.append(("Content-Type", json_type))
            verdict = json_verdict(body)
        elif kind == "multipart":
            body = b"--fuzz\r\n" + junk + b"\r\n--fuzz--\r\n"
            headers.append(("Content-Type", "multipart/form-data; boundary=fuzz"))
        else:
            body = junk
            if other_type is not None:
                headers.append(("Content-Type", other_type))
            if other_type not in (
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=fuzz",
            ):
                # Not JSON and not a form: there are no fields, so no data.
                verdict = Verdict(frozenset({400}))
        answer = fuzz.wire.exchange(build("POST", "/say", headers, body), "POST")
        fuzz.check("other-bodies", answer, verdict, body=body)

    case()
    fuzz.finished.add("other-bodies")


def test_fuzz_say_query_strings(fuzz: Fuzz) -> None:
    """GET /say with arbitrary percent-encoded bytes in msg, data, channel and event."""

    @fuzz_settings(2000)
    @given(query_strings())
    def case(query: str) -> None:
        answer = fuzz.wire.exchange(build("GET", "/say?" + query, [("Authorization", AUTH)]))
        args: dict[str, str] = {}
        for name, value in query_pairs(query):
            args.setdefault(name, value)
        data = args.get("msg", args.get("data"))
        verdict = publish_verdict(
            HELLO if data is None else data, args.get("event"), args.get("channel")
        )
        fuzz.check("query", answer, verdict)

    case()
    fuzz.finished.add("query")


def test_fuzz_events(fuzz: Fuzz) -> None:
    """GET /events with arbitrary channels, Last-Event-ID headers and lastEventId parameters,
    ids of this server's epoch included (the ones it issued, and absurd ones)."""

    @fuzz_settings(1500)
    @given(events_arguments)
    def case(arguments: tuple[t.Any, ...]) -> None:
        events_case(fuzz, "events", *arguments)

    case()
    fuzz.finished.add("events")


def authorization_verdict(value: str | None) -> Verdict:
    if value is None:
        return Verdict(frozenset({401}))
    scheme, _, given_token = value.strip(" \t").partition(" ")
    if scheme.lower() == "bearer" and given_token.strip() == TOKEN:
        return Verdict(frozenset({200}), "auth", "fuzz-auth", "message")
    return Verdict(frozenset({401}))


def test_fuzz_authorization(fuzz: Fuzz) -> None:
    """/say with missing, wrong, near-miss and garbage Authorization headers."""

    @fuzz_settings(800)
    @given(
        st.one_of(
            st.none(),
            st.just(AUTH),
            st.builds(
                lambda scheme, space, token: scheme + space + token,
                st.sampled_from(
                    ["Bearer", "bearer", "BEARER", "Basic", "", "Bearer:", "Token", "Bearer\t"]
                ),
                st.sampled_from([" ", "  ", "", "\t"]),
                st.one_of(
                    st.sampled_from(
                        [
                            TOKEN,
                            TOKEN + "x",
                            TOKEN[:-1],
                            TOKEN.upper(),
                            f" {TOKEN} ",
                            TOKEN + "\x00",
                            TOKEN + "é",
                        ]
                    ),
                    latin1_text,
                ),
            ),
            latin1_text,
        ),
        st.booleans(),
    )
    def case(value: str | None, post: bool) -> None:
        headers = [] if value is None else [("Authorization", value.encode("latin-1"))]
        if post:
            request = build(
                "POST",
                "/say",
                [*headers, ("Content-Type", "application/json")],
                b'{"data": "auth", "channel": "fuzz-auth"}',
            )
        else:
            request = build("GET", "/say?msg=auth&channel=fuzz-auth", headers)
        answer = fuzz.wire.exchange(request, "POST" if post else "GET")
        fuzz.check("authorization", answer, authorization_verdict(value))
        if answer.status == 401:
            assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer"), (
                answer.describe()
            )

    case()
    fuzz.finished.add("authorization")


#: The hypothesis tests of this module, by the name each counts its cases under.
FUZZ_TESTS = {"json", "other-bodies", "query", "events", "authorization"}


def test_server_serves_normally_afterwards(fuzz: Fuzz) -> None:
    """After all of the above, :func:`~helpers.fuzz.check_afterwards`; and, when every fuzz
    test of the module ran, at least 7,900 cases did, and each reached the app often enough."""
    check_afterwards(fuzz)
    check_counts(fuzz, FUZZ_TESTS, 7_900)
