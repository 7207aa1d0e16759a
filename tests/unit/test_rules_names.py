"""Tests of the strict name, id, label and SSH-target syntax, and of display-text sanitising."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker.rules import (
    SSH_TARGET_MAX_LEN,
    TICKET_ID_MAX,
    InvalidName,
    Label,
    RulesError,
    SshTarget,
    format_ticket_id,
    is_agent_id,
    parse_agent_id,
    parse_agent_name,
    parse_agent_ref,
    parse_customer_name,
    parse_label,
    parse_label_key,
    parse_label_value,
    parse_session_id,
    parse_ssh_target,
    parse_ticket_id,
    parse_ticket_ref,
    parse_user_name,
    sanitize_display_text,
)

# The patterns of the brief, written independently of the implementation.
USER = r"[a-z0-9][a-z0-9._-]{0,63}"
CUSTOMER = r"[a-z0-9][a-z0-9-]{0,62}"
AGENT_NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
AGENT_ID = r"ag-[a-z0-9]{16}"
SESSION_ID = r"s-[A-Za-z0-9]{22}"
TICKET_ID = r"T-[1-9][0-9]{0,8}"
LABEL_KEY = r"[a-z0-9][a-z0-9._/-]{0,62}"
LABEL_VALUE = r"[A-Za-z0-9._:/ -]{0,128}"


def _user_ok(text: str) -> bool:
    return bool(re.fullmatch(USER, text))


def _agent_name_ok(text: str) -> bool:
    return bool(re.fullmatch(AGENT_NAME, text)) and not re.fullmatch(AGENT_ID, text)


def _matches(pattern: str) -> Callable[[str], bool]:
    return lambda text: bool(re.fullmatch(pattern, text))


# parser, acceptance oracle, the pattern to draw valid examples from
STRING_PARSERS: list[tuple[Callable[[str], str], Callable[[str], bool], str]] = [
    (parse_user_name, _user_ok, USER),
    (parse_customer_name, _matches(CUSTOMER), CUSTOMER),
    (parse_agent_name, _agent_name_ok, AGENT_NAME),
    (parse_agent_id, _matches(AGENT_ID), AGENT_ID),
    (parse_session_id, _matches(SESSION_ID), SESSION_ID),
    (parse_label_key, _matches(LABEL_KEY), LABEL_KEY),
    (parse_label_value, _matches(LABEL_VALUE), LABEL_VALUE),
]
PARSER_IDS = [parser.__name__ for parser, _, _ in STRING_PARSERS]


def _outcome(parser: Callable[[str], object], text: str) -> object:
    """Return the parser's result, or the InvalidName it raised; anything else escapes."""
    try:
        return parser(text)
    except InvalidName as error:
        refusal = error
    assert refusal.code == "invalid_name"
    assert str(refusal) == refusal.message
    assert refusal.message.isascii()
    return refusal


@pytest.mark.parametrize(("parser", "oracle", "pattern"), STRING_PARSERS, ids=PARSER_IDS)
@given(data=st.data())
def test_string_parsers_agree_with_the_patterns(
    parser: Callable[[str], str],
    oracle: Callable[[str], bool],
    pattern: str,
    data: st.DataObject,
) -> None:
    """Arbitrary or pattern-shaped text is returned unchanged exactly when the pattern matches."""
    text = data.draw(st.one_of(st.text(), st.from_regex(pattern, fullmatch=True)))
    outcome = _outcome(parser, text)
    if oracle(text):
        assert outcome == text
    else:
        assert isinstance(outcome, InvalidName)


@given(text=st.one_of(st.text(), st.from_regex(TICKET_ID, fullmatch=True)))
@example(text="T-0")
@example(text="T-1234567890")
def test_ticket_ids_round_trip(text: str) -> None:
    """A ticket id parses exactly when it matches, and formats back to the same text."""
    outcome = _outcome(parse_ticket_id, text)
    if re.fullmatch(TICKET_ID, text):
        assert isinstance(outcome, int)
        assert format_ticket_id(outcome) == text
    else:
        assert isinstance(outcome, InvalidName)


@given(number=st.integers(min_value=1, max_value=TICKET_ID_MAX))
def test_ticket_numbers_round_trip(number: int) -> None:
    """Every ticket number formats to an id that parses back to it."""
    assert parse_ticket_id(format_ticket_id(number)) == number


@pytest.mark.parametrize("number", [0, -1, TICKET_ID_MAX + 1])
def test_format_ticket_id_refuses_out_of_range(number: int) -> None:
    """Numbers outside 1..999999999 have no ticket id."""
    with pytest.raises(InvalidName, match="out of range"):
        format_ticket_id(number)


@pytest.mark.parametrize("number", [True, 1.0, "1"])
def test_format_ticket_id_refuses_non_integers(number: object) -> None:
    """Booleans, floats and strings are not ticket numbers."""
    with pytest.raises(InvalidName, match="must be an integer"):
        format_ticket_id(cast(int, number))


@pytest.mark.parametrize(
    ("text", "number"), [("T-1042", 1042), ("1042", 1042), ("T-1", 1), ("999999999", 999999999)]
)
def test_parse_ticket_ref_accepts_id_or_bare_number(text: str, number: int) -> None:
    """A command line may name a ticket as T-1042 or as 1042."""
    assert parse_ticket_ref(text) == number


@pytest.mark.parametrize("text", ["", "T-", "0", "01", "T-01", "t-1", "-1", "1e3", cast(str, 5)])
def test_parse_ticket_ref_refuses_the_rest(text: str) -> None:
    """Anything but T-<n> or <n> is refused with InvalidName."""
    with pytest.raises(InvalidName):
        parse_ticket_ref(text)


@pytest.mark.parametrize(
    ("parser", "text", "fragment"),
    [
        (parse_user_name, "", "the user name is empty"),
        (parse_user_name, "Bob", "it starts with 'B'"),
        (parse_user_name, "bo b", "it contains ' '"),
        (parse_user_name, "b" * 65, "it is 65 characters long"),
        (parse_user_name, ".", "it starts with '.'"),
        (parse_user_name, "..", "it starts with '.'"),
        (parse_user_name, "-rf", "it starts with '-'"),
        (parse_user_name, "_svc", "it starts with '_'"),
        (parse_user_name, "b\u00f6b", "it contains '\\xf6'"),
        (parse_customer_name, "-acme", "it starts with '-'"),
        (parse_customer_name, "ac.me", "it contains '.'"),
        (parse_agent_name, "ag-0123456789abcdef", "reserved for agent ids"),
        (parse_agent_name, "web/01", "it contains '/'"),
        (parse_agent_id, "ag-0123", "it is 7 characters long"),
        (parse_agent_id, "AG-0123456789abcdef", "does not start with 'ag-'"),
        (parse_agent_id, "ag-X123456789abcdef", "after 'ag-' it has 'X'"),
        (parse_session_id, "s-" + "a" * 21 + "%", "it contains '%'"),
        (parse_ticket_id, "T-0", "after 'T-' it has '0'"),
        (parse_ticket_id, "T-1234567890", "it is 12 characters long"),
        (parse_ticket_id, "T-12a", "it contains 'a'"),
        (parse_label_key, "Env", "it starts with 'E'"),
        (parse_label_value, "a=b", "it contains '='"),
        (parse_label_value, "x" * 129, "it is 129 characters long"),
    ],
)
def test_refusals_say_what_is_wrong_and_what_is_allowed(
    parser: Callable[[str], object], text: str, fragment: str
) -> None:
    """Each refusal names the problem and states the rule."""
    with pytest.raises(InvalidName) as raised:
        parser(text)
    assert fragment in raised.value.message
    assert any(word in raised.value.message for word in ("use ", " is '"))


@pytest.mark.parametrize(
    "parser",
    [
        parse_user_name,
        parse_customer_name,
        parse_agent_name,
        parse_agent_id,
        parse_session_id,
        parse_ticket_id,
        parse_label_key,
        parse_label_value,
        parse_ssh_target,
    ],
)
def test_non_text_is_refused(parser: Callable[[str], object]) -> None:
    """A value that is not a string (say, a number from JSON) is refused, not crashed on."""
    with pytest.raises(InvalidName, match="must be text"):
        parser(cast(str, 1042))


def test_long_input_is_quoted_shortened_in_messages() -> None:
    """A refused long value is quoted only in part, keeping its quote style."""
    with pytest.raises(InvalidName) as raised:
        parse_user_name("A" * 5000)
    assert "'" + "A" * 40 + "...'" in raised.value.message
    with pytest.raises(InvalidName) as raised:
        parse_user_name("'" * 100)
    assert '..."' in raised.value.message
    assert len(raised.value.message) < 300


def test_invalid_name_is_a_value_error_under_the_root() -> None:
    """Callers may catch InvalidName, RulesError or ValueError."""
    assert issubclass(InvalidName, RulesError)
    assert issubclass(InvalidName, ValueError)


def test_agent_ref_tells_ids_from_names() -> None:
    """An id-shaped reference is an id; anything else must be a valid agent name."""
    assert parse_agent_ref("ag-0123456789abcdef") == "ag-0123456789abcdef"
    assert is_agent_id("ag-0123456789abcdef")
    assert parse_agent_ref("web01") == "web01"
    assert not is_agent_id("web01")
    with pytest.raises(InvalidName):
        parse_agent_ref("Web01")


@given(text=st.one_of(st.text(), st.from_regex(rf"{LABEL_KEY}={LABEL_VALUE}", fullmatch=True)))
@example(text="env=")
@example(text="env")
@example(text="=prod")
def test_labels_round_trip(text: str) -> None:
    """KEY=VALUE parses exactly when both parts match, and prints back to the same text."""
    outcome = _outcome(parse_label, text)
    key, sep, value = text.partition("=")
    if sep and re.fullmatch(LABEL_KEY, key) and re.fullmatch(LABEL_VALUE, value):
        assert outcome == Label(key, value)
        assert str(outcome) == text
    else:
        assert isinstance(outcome, InvalidName)


def test_label_refusals() -> None:
    """A label without '=' or one that is not text is refused with the KEY=VALUE rule."""
    with pytest.raises(InvalidName, match="has no '='"):
        parse_label("env")
    with pytest.raises(InvalidName, match="int: it has no '='"):
        parse_label(cast(str, 3))
    assert parse_label("env=prod eu:1/a.b_c-d") == Label("env", "prod eu:1/a.b_c-d")
    assert parse_label("a=b") == Label("a", "b")


SSH_TARGET = rf"{TICKET_ID}(\+({AGENT_ID}|{AGENT_NAME}|{SESSION_ID}))?"


@given(text=st.one_of(st.text(), st.from_regex(SSH_TARGET, fullmatch=True)))
@example(text="T-1042")
@example(text="T-1042+web01")
@example(text="T-1042+s-AbCdEfGhIjKlMnOpQrStUv")
def test_ssh_targets_round_trip(text: str) -> None:
    """An SSH user name parses exactly when it names a ticket (and an agent or a session),
    and prints back; a session id is never taken for an agent name."""
    outcome = _outcome(parse_ssh_target, text)
    ticket, plus, second = text.partition("+")
    session = bool(re.fullmatch(SESSION_ID, second))
    valid = bool(re.fullmatch(TICKET_ID, ticket)) and (
        not plus or session or bool(re.fullmatch(AGENT_ID, second)) or _agent_name_ok(second)
    )
    if valid:
        assert isinstance(outcome, SshTarget)
        assert str(outcome) == text
        assert outcome.agent_is_id == (outcome.agent is not None and is_agent_id(outcome.agent))
        assert outcome.session == (second if session else None)
        assert outcome.agent is None or not session
    else:
        assert isinstance(outcome, InvalidName)


def test_ssh_target_examples_of_the_contract() -> None:
    """The three forms of PRODUCT.md's SSH contract parse as documented."""
    assert parse_ssh_target("T-1042") == SshTarget(1042, None)
    assert parse_ssh_target("T-1042+web01") == SshTarget(1042, "web01")
    by_id = parse_ssh_target("T-1042+ag-0123456789abcdef")
    assert by_id == SshTarget(1042, "ag-0123456789abcdef")
    assert by_id.agent_is_id
    assert not parse_ssh_target("T-1042+web01").agent_is_id
    assert not parse_ssh_target("T-1042").agent_is_id
    joined = parse_ssh_target("T-1042+s-AbCdEfGhIjKlMnOpQrStUv")
    assert joined == SshTarget(1042, None, "s-AbCdEfGhIjKlMnOpQrStUv")
    assert not joined.agent_is_id


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        ("T-1042+../etc", "invalid agent name '../etc'"),
        ("../../etc/passwd", "does not start with 'T-'"),
        ("T-1042%00", "it contains '%'"),
        ("T-10%2042", "it contains '%'"),
        ("T-1042 +web01", "space or control character ' '"),
        ("T-1042\x00", "space or control character '\\x00'"),
        ("T-1042\r\nweb01", "space or control character '\\r'"),
        ("T-1042\t", "space or control character '\\t'"),
        ("T-1042\x7f", "space or control character '\\x7f'"),
        ("T-\u0661\u0660", "non-ASCII character '\\u0661'"),
        ("\u0422-1042", "non-ASCII character '\\u0422'"),
        ("T-1042+web\u200b01", "non-ASCII character '\\u200b'"),
        ("T-1042+" + "a" * 200, "it is 207 characters long"),
        ("T-1042+", "the part after '+' is empty"),
        ("+web01", "the part before '+' is empty"),
        ("T-1042+web01+db01", "more than one '+'"),
        ("T-1042++", "more than one '+'"),
        ("T-01", "after 'T-' it has '0'"),
        ("t-1042", "does not start with 'T-'"),
        ("T-1042+Web01", "it starts with 'W'"),
        ("T-1042+-web", "it starts with '-'"),
        ("1042", "does not start with 'T-'"),
    ],
)
def test_ssh_target_refusals(text: str, fragment: str) -> None:
    """Hostile or malformed SSH user names are refused with a sentence naming the problem."""
    with pytest.raises(InvalidName) as raised:
        parse_ssh_target(text)
    assert fragment in raised.value.message
    assert raised.value.message.isascii()
    assert "\r" not in raised.value.message
    assert "\x00" not in raised.value.message


def test_ssh_target_length_limit_is_inclusive() -> None:
    """200 characters pass the length check; 201 do not."""
    assert SSH_TARGET_MAX_LEN == 200
    with pytest.raises(InvalidName, match="201 characters long"):
        parse_ssh_target("T-1+" + "a" * 197)
    with pytest.raises(InvalidName, match="invalid agent name"):
        parse_ssh_target("T-1+" + "a" * 196)


FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2028\u2029"
    "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]"
)


@given(text=st.text(), max_len=st.integers(min_value=-3, max_value=300))
@example(text="\u202eexe.txt", max_len=64)
@example(text="\ud800web", max_len=64)
def test_sanitize_never_raises_and_leaves_nothing_hidden(text: str, max_len: int) -> None:
    """Any text comes out capped, trimmed, encodable and free of controls and bidi tricks."""
    cleaned = sanitize_display_text(text, max_len)
    assert len(cleaned) <= max(max_len, 0)
    assert not FORBIDDEN.search(cleaned)
    assert cleaned == cleaned.strip()
    cleaned.encode("utf-8")
    assert sanitize_display_text(cleaned, max_len) == cleaned


@given(text=st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "S"])))
def test_sanitize_keeps_plain_text(text: str) -> None:
    """Printable text without surrounding spaces comes out unchanged."""
    assert sanitize_display_text(text, 10_000) == text


@pytest.mark.parametrize(
    ("text", "max_len", "expected"),
    [
        ("web01", 64, "web01"),
        ("Debian\nGNU/Linux", 64, "Debian GNU/Linux"),
        ("a\r\n\tb", 64, "a b"),
        ("  web01  ", 64, "web01"),
        ("\x1b[31mred\x1b[0m", 64, "[31mred[0m"),
        ("\x1b]0;title\x07x", 64, "]0;titlex"),
        ("invoice\u202egpj.exe", 64, "invoicegpj.exe"),
        ("\u2066a\u2069\u200e\u200f\u061c", 64, "a"),
        ("web\u200b01\ufeff", 64, "web01"),
        ("\x85line\u2028para\u2029", 64, "line para"),
        ("\x9bc1", 64, "c1"),
        ("caf\u00e9 \u2603 \u65e5\u672c", 64, "caf\u00e9 \u2603 \u65e5\u672c"),
        ("abcdef", 3, "abc"),
        ("ab cdef", 3, "ab"),
        ("abc", 0, ""),
        ("abc", -1, ""),
        ("", 10, ""),
    ],
)
def test_sanitize_examples(text: str, max_len: int, expected: str) -> None:
    """Controls go, breaks become spaces, bidi and invisible characters go, length is capped."""
    assert sanitize_display_text(text, max_len) == expected
