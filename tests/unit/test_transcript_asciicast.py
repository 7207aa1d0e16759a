"""asciicast v2 encoding and the strict parser used by verification."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.transcript.asciicast import (
    MAX_EVENT_CHARS,
    MAX_LINE_BYTES,
    CastEvent,
    CastHeader,
    CastReader,
    RawLine,
    SessionInfo,
    check_session_id,
    clean_label,
    encode_event_line,
    encode_header_line,
    event_from_json,
    header_from_json,
    parse_event_line,
    parse_header_line,
    read_lines,
    resize_data,
)
from broker.transcript.errors import CastFormatError, InvalidSessionId, InvalidValue

SID = "s-" + "a1B2" * 5 + "zz"
INFO = SessionInfo(session_id=SID, ticket="T-1042", agent="web01", staff="bob")


def header(**changes: object) -> CastHeader:
    fields: dict[str, object] = {
        "width": 80,
        "height": 24,
        "timestamp": 1700000000,
        "session": INFO,
        "term": "xterm-256color",
        "shell": "/bin/bash",
        "title": "printer offline",
    }
    fields.update(changes)
    return CastHeader(**fields)  # type: ignore[arg-type]


def test_header_line_is_what_asciinema_expects() -> None:
    """The header is a version 2 object with our metadata under "secondline"."""
    doc = json.loads(encode_header_line(header()))
    assert doc == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1700000000,
        "title": "printer offline",
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
        "secondline": {"session_id": SID, "ticket": "T-1042", "agent": "web01", "staff": "bob"},
    }


def test_header_without_optional_fields() -> None:
    """Title, TERM and SHELL are optional and round-trip when absent."""
    h = header(term=None, shell=None, title=None)
    line = encode_header_line(h)
    assert b"title" not in line
    assert parse_header_line(line) == h


def test_header_round_trip() -> None:
    """A header parses back to itself."""
    assert parse_header_line(encode_header_line(header())) == header()


def test_header_title_is_cleaned() -> None:
    """A title with control characters is shown escaped and capped."""
    h = header(title="evil\x1b]52;c;x\x07" + "t" * 300)
    assert h.title is not None
    assert h.title.startswith("evil\\x1b]52;c;x\\x07")
    assert len(h.title) == 200
    assert h.title.endswith("…")


@pytest.mark.parametrize(
    "changes",
    [
        {"width": 0},
        {"height": 10001},
        {"width": True},
        {"timestamp": -1},
        {"timestamp": 1.5},
        {"term": "xterm; rm -rf"},
        {"shell": "bash"},
        {"shell": "/bin/sh\n"},
    ],
)
def test_header_refuses_bad_values(changes: dict[str, object]) -> None:
    """Out-of-range sizes and odd TERM/SHELL values are refused."""
    with pytest.raises(InvalidValue):
        header(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"session_id": "s-short"},
        {"session_id": "../../etc/passwd"},
        {"ticket": "T-x"},
        {"agent": "Web 01"},
        {"staff": "bob;id"},
    ],
)
def test_session_info_refuses_bad_values(changes: dict[str, str]) -> None:
    """Session id, ticket, agent and staff must match their strict patterns."""
    fields = {"session_id": SID, "ticket": "T-1", "agent": "web01", "staff": "bob", **changes}
    with pytest.raises(InvalidValue):
        SessionInfo(**fields)


@pytest.mark.parametrize("bad", ["", "s-" + "a" * 21, "s-" + "a" * 23, "s-" + "a" * 21 + "/", 7])
def test_check_session_id(bad: object) -> None:
    """Only s- and exactly 22 letters or digits make a session id."""
    with pytest.raises(InvalidSessionId):
        check_session_id(bad)  # type: ignore[arg-type]
    assert check_session_id(SID) == SID


def test_event_line_encoding() -> None:
    """Events have six-decimal times and JSON-escaped data."""
    assert encode_event_line(1.5, "o", 'a"\x1b\n') == b'[1.500000, "o", "a\\"\\u001b\\n"]'
    assert encode_event_line(0.0, "m", "é") == '[0.000000, "m", "é"]'.encode()


@pytest.mark.parametrize(
    ("time", "code", "data"),
    [
        (-1.0, "o", ""),
        (float("nan"), "o", ""),
        (1e9, "o", ""),
        (0.0, "x", ""),
        (0.0, "o", "\ud800"),
    ],
)
def test_event_line_refuses_bad_values(time: float, code: str, data: str) -> None:
    """Negative or huge times, unknown codes and lone surrogates are refused."""
    with pytest.raises(InvalidValue):
        encode_event_line(time, code, data)


def test_resize_data() -> None:
    """Resize data is COLSxROWS within 1..10000."""
    assert resize_data(120, 40) == "120x40"
    for cols, rows in ((0, 1), (1, 10001), (True, 5)):
        with pytest.raises(InvalidValue):
            resize_data(cols, rows)


def test_clean_label() -> None:
    """Labels lose controls, bidi overrides and surrogates, and are capped."""
    assert clean_label("consent approved by bob") == "consent approved by bob"
    assert clean_label("a\nb\u202e\ud800") == "a\\x0ab\\u202e\ufffd"
    assert clean_label("x" * 500, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"[" * 100000, "not valid JSON"),
        (b"[]", "header is not a JSON object"),
        (b'{"version": 2}', "lacks a required key"),
        (
            b'{"version": 1, "width": 1, "height": 1, "timestamp": 0, "env": {}, "secondline": {}}',
            "not asciicast version 2",
        ),
        (
            b'{"version": 2, "width": 1, "height": 1, "timestamp": 0, "env": {}, '
            b'"secondline": {}, "idle": 1}',
            "key we do not write",
        ),
        (
            b'{"version": 2, "width": 1, "height": 1, "timestamp": 0, "env": {"X": "y"}, '
            b'"secondline": {}}',
            "env holds",
        ),
        (
            b'{"version": 2, "width": 1, "height": 1, "timestamp": 0, "env": {}, '
            b'"secondline": {"a": 1}}',
            "secondline object",
        ),
        (
            b'{"version": 2, "width": 1, "height": 1, "timestamp": 0, "env": {"TERM": 1}, '
            b'"secondline": {"session_id": 1, "ticket": "", "agent": "", "staff": ""}}',
            "non-text",
        ),
        (
            b'{"version": 2.0, "width": 1, "height": 1, "timestamp": 0, "env": {}, '
            b'"secondline": {}}',
            "not asciicast version 2",
        ),
    ],
)
def test_header_parser_refusals(line: bytes, reason: str) -> None:
    """A header that is not ours is refused on line 1 with the reason."""
    with pytest.raises(CastFormatError) as info:
        parse_header_line(line)
    assert info.value.line == 1
    assert info.value.event is None
    assert reason in info.value.reason


def test_header_parser_refuses_non_canonical_forms() -> None:
    """A header with other spacing or key order is refused, though its content is fine."""
    line = encode_header_line(header())
    doc = json.loads(line)
    with pytest.raises(CastFormatError, match="canonical"):
        parse_header_line(json.dumps(doc, separators=(",", ":")).encode())
    with pytest.raises(CastFormatError):
        parse_header_line(json.dumps(doc, sort_keys=True, separators=(", ", ": ")).encode())


def test_header_parser_refuses_bad_title() -> None:
    """A title with raw control characters is refused."""
    doc = header_from_json(json.loads(encode_header_line(header()))).to_json()
    doc["title"] = "a\x07b"
    with pytest.raises(InvalidValue):
        header_from_json(doc)
    with pytest.raises(InvalidValue):
        header_from_json([1])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'[1.000000, "o"]', "array of time, code and data"),
        (b'["1", "o", "x"]', "not a number"),
        (b'[true, "o", "x"]', "not a number"),
        (b'[NaN, "o", "x"]', "not valid JSON"),
        (b'[1e999, "o", "x"]', "not a number"),
        (b'[1.000000, "z", "x"]', "not o, b, i, a, r or m"),
        (b'[1.000000, "o", 5]', "not text"),
        (b'[0.500000, "o", "x"]', "goes backwards"),
        (b'[1.000000, "r", "80-24"]', "COLSxROWS"),
        (b'[1.000000, "r", "0x24"]', "terminal size"),
        (b'[1.000000, "m", "a\\u0007"]', "marker label"),
        (b'[1.0, "o", "x"]', "canonical"),
        (b'[1.000000,"o","x"]', "canonical"),
        (b'[1.000000, "o", "\\u0078"]', "canonical"),
        (b'[1.000000, "o", "\\ud800"]', "valid Unicode"),
        (b"[" + b"9" * 5000 + b', "o", "x"]', "not valid JSON"),
    ],
)
def test_event_parser_refusals(line: bytes, reason: str) -> None:
    """An event line that our writer would not produce is refused, naming the event."""
    with pytest.raises(CastFormatError) as info:
        parse_event_line(line, event=3, previous_time=1.0)
    assert info.value.line == 4
    assert info.value.event == 3
    assert reason in info.value.reason


def test_event_parser_refuses_overlong_data_and_lines() -> None:
    """Events longer than we write, or lines past the byte cap, are refused."""
    long_event = encode_event_line(0.0, "o", "x" * (MAX_EVENT_CHARS + 1))
    with pytest.raises(CastFormatError, match="longer than we write"):
        parse_event_line(long_event, event=1)
    with pytest.raises(CastFormatError, match="too long"):
        parse_event_line(b" " * (MAX_LINE_BYTES + 1), event=1)


@pytest.mark.parametrize(
    "event",
    [
        CastEvent(0.0, "o", "\x1b[0m€"),
        CastEvent(2.25, "i", "ls\r"),
        CastEvent(3.0, "r", "80x24"),
        CastEvent(4.5, "m", "participant joined: carol (observer)"),
    ],
)
def test_event_round_trip(event: CastEvent) -> None:
    """Each kind of event parses back to itself."""
    line = encode_event_line(event.time, event.code, event.data)
    assert parse_event_line(line, event=1) == event
    assert event_from_json(json.loads(line)) == event


def test_reader_counts_and_orders() -> None:
    """The reader parses the header then events, counting them and checking time order."""
    reader = CastReader()
    assert reader.feed_line(encode_header_line(header())) == header()
    reader.feed_line(encode_event_line(1.0, "o", "a"))
    reader.feed_line(encode_event_line(1.0, "i", "b"))
    assert reader.events == 2
    with pytest.raises(CastFormatError) as info:
        reader.feed_line(encode_event_line(0.5, "o", "c"))
    assert (info.value.line, info.value.event) == (4, 3)


def test_read_lines_marks_torn_and_long_lines() -> None:
    """read_lines tells complete, torn and overlong lines apart."""
    assert list(read_lines(io.BytesIO(b"a\nbc\nde"))) == [
        RawLine(b"a", True, False, 2),
        RawLine(b"bc", True, False, 3),
        RawLine(b"de", False, False, 2),
    ]
    long = list(read_lines(io.BytesIO(b"x" * (MAX_LINE_BYTES + 1) + b"\nmore\n")))
    assert len(long) == 1
    assert long[0].too_long
    assert long[0].terminated
    endless = list(read_lines(io.BytesIO(b"y" * (MAX_LINE_BYTES + 5))))
    assert len(endless) == 1
    assert endless[0].too_long
    assert not endless[0].terminated
    assert list(read_lines(io.BytesIO(b""))) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parser_raises_only_cast_format_errors_on_bytes(line: bytes) -> None:
    """Arbitrary bytes give a parsed line or CastFormatError, nothing else."""
    for parse in (parse_header_line, lambda b: parse_event_line(b, event=1)):
        with contextlib.suppress(CastFormatError):
            parse(line)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON, st.tuples(st.floats(), st.sampled_from("oirmx"), st.text()).map(list)))
def test_parser_raises_only_cast_format_errors_on_json(doc: object) -> None:
    """Arbitrary JSON documents as lines give only CastFormatError."""
    line = json.dumps(doc, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8", "replace")
    for parse in (parse_header_line, lambda b: parse_event_line(b, event=1)):
        with contextlib.suppress(CastFormatError):
            parse(line)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0, max_value=1e8, allow_nan=False),
    st.sampled_from(["o", "i", "a", "m"]),
    st.text(max_size=50),
)
def test_any_event_we_write_parses_back(time: float, code: str, data: str) -> None:
    """Every event the encoder accepts parses back to the same line."""
    if code == "m":
        data = clean_label(data)
    try:
        line = encode_event_line(time, code, data)
    except InvalidValue:
        return  # lone surrogates: refused on encoding already
    event = parse_event_line(line, event=1)
    assert encode_event_line(event.time, event.code, event.data) == line
