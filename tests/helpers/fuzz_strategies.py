"""The hypothesis strategies that more than one fuzz module draws from: text of any kind,
channels, event types, data around the size limit, and JSON bodies for ``POST /say``."""

from __future__ import annotations

import json
import typing as t

from hypothesis import strategies as st

from helpers.fuzz import WITNESS
from helpers.fuzz_verdicts import CHANNEL_CHARACTERS

#: Any text, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()), max_size=24)
latin1_text = st.text(st.characters(max_codepoint=255), max_size=24)
good_channels = st.text(sorted(CHANNEL_CHARACTERS), min_size=1, max_size=128)
channels = st.one_of(
    st.just(WITNESS),
    st.just(WITNESS),
    good_channels,
    st.text(sorted(CHANNEL_CHARACTERS) + list(" /#%&=+?\t\r\n\x00é频\u2028\ud800"), max_size=12),
    st.sampled_from(
        ["", "x" * 128, "x" * 129, "default", "a b", "café", "频道", "a\nb", "news\x00"]
    ),
    any_text,
)
event_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "message",
            "",
            "\n",
            "\r",
            "\r\n",
            "\x00",
            "a\nb",
            "x\n\ndata: forged",
            "update",
            "é",
            "\u2028",
            "\ud800",
        ]
    ),
    st.text(st.sampled_from("ab \r\n\x00:"), max_size=6),
    any_text,
)
#: Long strings, around the data limit, in characters of 1 to 4 bytes in UTF-8 and line breaks.
long_text = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["a", "é", "€", "😀", "\r\n", "\n", "\r", "\u2028", "\x00", " "]),
    st.one_of(
        st.integers(0, 100),
        st.integers(16380, 16390),
        st.integers(32764, 32772),
        st.integers(65530, 65540),
        st.integers(0, 70000),
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=6,
)
data_values = st.one_of(
    any_text,
    json_values,
    st.text(st.sampled_from("ab\r\n \x00é"), max_size=12),
    any_text,
    json_values,
    long_text,
)

#: JSON text that no json.dumps writes: huge numbers, deep nesting, NaN, escapes, truncation.
raw_json = st.one_of(
    st.builds(
        lambda n: '{"data": %s}' % ("9" * n), st.integers(4290, 4310) | st.integers(1, 20000)
    ),
    st.builds(lambda n: '{"data": -%s.5e99999}' % ("1" * n), st.integers(1, 5000)),
    st.builds(
        lambda n, nest: '{"data": %s}' % (nest[0] * n + "1" + nest[1] * n),
        st.integers(1, 120_000),
        st.sampled_from([("[", "]"), ('{"a":', "}")]),
    ),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 120_000)),
    st.sampled_from(
        [
            '{"data": NaN}',
            '{"data": Infinity}',
            '{"data": -Infinity}',
            '{"data": [NaN]}',
            '{"data": "\\ud800"}',
            '{"data": "\\udfff\\ud800"}',
            '{"data": "\\ud83d\\ude00"}',
            '{"data": "x", "event": "\\ud800"}',
            '{"data": "x", "channel": "\\u0000"}',
            '{"data": "x", "event": "a\\u000ab"}',
            '{"data": "x", "event": "\\u2028"}',
            '{"data": "x", "data": "y"}',
            '{"data": 1e999}',
            '{"data": -0.0}',
            '{"data": 1E400}',
            '{"data": "\\"}',
            '{"data": "x",}',
            "{'data': 'x'}",
            '{"data": "x"} {"data": "y"}',
            '"data"',
            "[]",
            "null",
            "",
            " ",
            "\ufeff{}",
            '{"data": "x", "event": null, "channel": null}',
            '{"data": null}',
            '{"data": {"data": {"data": []}}}',
        ]
    ),
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON body for POST /say."""
    kind = draw(st.sampled_from(["fields", "fields", "fields", "raw", "value", "truncated"]))
    if kind == "raw":
        return t.cast(str, draw(raw_json)).encode("utf-8", "surrogatepass")
    if kind == "value":
        value: t.Any = draw(json_values)
    else:
        value = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "data": data_values,
                    "event": event_types,
                    "channel": channels,
                    "extra": json_values,
                },
            )
        )
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    encoding = draw(
        st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32-le", "utf-8-sig"])
    )
    body = text.encode(encoding, "surrogatepass")
    if kind == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    return body


json_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
        "application/json; charset=latin-1",
        "application/json;;;",
    ]
)

#: Resume ids: anything, and this server's epoch followed by anything, numbers of any size
#: included (the memory broker's ids are ``epoch-N``, the Redis broker's ``epoch-MS-N``).
last_event_ids = st.one_of(
    st.none(),
    latin1_text,
    st.integers(0, 2**70).map(str),
    st.integers(-5, 10**40),
    st.integers(4290, 4310).map(lambda n: "9" * n),
    st.integers(1, 7000).map(lambda n: "1" * n),
    st.tuples(st.integers(0, 2**66), st.integers(0, 2**66)).map(
        lambda pair: f"{pair[0]}-{pair[1]}"
    ),
    st.sampled_from(["", "-", "--", "0-0", "0-", "-0", "deadbeef-1", "1-1", "\x7f", "١-٢", "²"]),
    st.sampled_from(
        [
            "1-18446744073709551616",
            "18446744073709551615-18446744073709551615",
            "18446744073709551616-0",
            "0-" + "9" * 4400,
        ]
    ),
)


events_arguments = st.tuples(
    st.lists(st.one_of(channels, good_channels), max_size=4),
    last_event_ids,
    st.sampled_from(["header", "param", "both", "none"]),
    st.booleans(),
    st.integers(0, 10**6),
    st.sampled_from([None, "text/event-stream", "*/*", "text/html", "\x01"]),
)
