"""The pure parts of the ticket store: accepted text, attachment names, help-request tickets,
and the CLI's ticket ids."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.cli.client import CliError
from broker.cli.tickets import _safe, ticket_path
from broker.rules import Refused
from broker.tickets import text
from broker.tickets.errors import TicketInputError, TicketNotFound, TicketRefused
from broker.tickets.help_request import facts_text, help_ticket

_STORED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def test_title_keeps_html_and_drops_controls() -> None:
    """A title keeps markup literally, loses escape sequences, and becomes one line."""
    raw = "<b>Printer</b>\x1b[31m on\nfloor 2\u202e\x00"
    assert text.clean_title(raw) == "<b>Printer</b>[31m on floor 2"


@pytest.mark.parametrize(
    ("value", "code", "status"),
    [
        ("x" * 201, "text_too_long", 413),
        ("", "invalid_input", 400),
        (" \x1b\x07\t", "invalid_input", 400),
        (42, "invalid_text", 400),
    ],
)
def test_title_refusals(value: object, code: str, status: int) -> None:
    """Over-long, empty-after-cleaning and non-text titles are refused, never cut."""
    with pytest.raises(TicketInputError) as refused:
        text.clean_title(value)
    assert (refused.value.code, refused.value.http_status) == (code, status)


def test_clean_text_keeps_tabs_and_newlines_only() -> None:
    """Multi-line text keeps tab and newline, normalises line ends and drops other controls."""
    raw = " a\tb\r\nc\rd\x1b[2J\x07\x9b\x7f\u2028e\u200b "
    assert text.clean_text(raw, "note", 100, required=True) == "a\tb\nc\nd[2J\ne"
    assert text.clean_text("", "description", 100, required=False) == ""
    with pytest.raises(TicketInputError):
        text.clean_text("\x00\x01", "note", 100, required=True)
    with pytest.raises(TicketInputError) as big:
        text.clean_text("x" * 101, "note", 100, required=True)
    assert big.value.http_status == 413
    assert "keep it to 100" in big.value.message


@given(st.text(max_size=300))
def test_clean_text_never_leaves_a_control_character(value: str) -> None:
    """Whatever comes in, stored text holds no control character but tab and newline."""
    try:
        cleaned = text.clean_text(value, "note", 300, required=False)
    except TicketInputError:
        return
    assert all(c in "\t\n" or unicodedata.category(c) != "Cc" for c in cleaned)
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200b]", cleaned)


def test_requester_and_level() -> None:
    """The requester is one clean line; levels are exactly 1, 2 and 3."""
    assert text.clean_requester("Ann\x1b[0m\nDesk 4") == "Ann[0m Desk 4"
    with pytest.raises(TicketInputError):
        text.clean_requester("r" * 201)
    assert [text.check_level(n) for n in (1, 2, 3)] == [1, 2, 3]
    for bad in (0, 4, -1, True, "2", 2.0, None):
        with pytest.raises(TicketInputError) as refused:
            text.check_level(bad)
        assert refused.value.code == "bad_level"


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("report.txt", "report.txt"),
        ("error page (1).html", "error_page__1_.html"),
        ("Überblick.pdf", "berblick.pdf"),
        ("_x", "x"),
        ("s-abcDEF.cast", "s-abcDEF.cast"),
    ],
)
def test_attachment_names_are_mapped_to_the_strict_set(name: str, stored: str) -> None:
    """Ordinary names pass; other characters become '_', dropped at the start."""
    assert text.attachment_name(name) == stored


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "..",
        ".",
        "a/b",
        "a\\b",
        "x\x00y",
        "tab\there",
        "a..b",
        ".bashrc",
        "-rf",
        "Ü.pdf",
        "",
        "n" * 101,
    ],
)
def test_attachment_names_that_could_escape_are_refused(name: str) -> None:
    """Separators, '..', controls, hidden or option-like names and empty or long ones fail."""
    with pytest.raises(TicketInputError) as refused:
        text.attachment_name(name)
    assert refused.value.code in ("bad_attachment_name", "invalid_input")


@given(st.text(max_size=120))
def test_any_accepted_attachment_name_is_safe(name: str) -> None:
    """Every name that is accepted is one strict file name that cannot leave its directory."""
    try:
        stored = text.attachment_name(name)
    except TicketInputError:
        return
    assert _STORED_NAME.fullmatch(stored)
    assert ".." not in stored


def test_numbered_names_stay_valid() -> None:
    """The next free name keeps the extension and the length limit."""
    assert text.numbered_name("report.txt", 2) == "report-2.txt"
    assert text.numbered_name("README", 3) == "README-3"
    long = text.numbered_name("a" * 96 + ".txt", 12)
    assert len(long) == 100
    assert long.endswith("-12.txt")
    assert text.attachment_name(long) == long


def test_content_types_and_disposition() -> None:
    """Media types lose parameters and junk; downloads always carry a quoted safe name."""
    assert text.content_type("Text/Plain; charset=utf-8") == "text/plain"
    assert text.content_type("application/x-asciicast") == "application/x-asciicast"
    for junk in (None, "", "nonsense", 'text/html"\r\nX: y', "a/b/c"):
        assert text.content_type(junk) == text.DEFAULT_CONTENT_TYPE
    assert text.content_disposition("a-1.txt") == 'attachment; filename="a-1.txt"'
    with pytest.raises(TicketInputError):
        text.content_disposition('a".txt')


def test_idempotency_keys() -> None:
    """Keys are short strict tokens; None means no key."""
    assert text.idempotency_key(None) is None
    assert text.idempotency_key("session:s-abc/note=1") == "session:s-abc/note=1"
    for bad in ("", "a b", "k" * 201, "é"):
        with pytest.raises(TicketInputError):
            text.idempotency_key(bad)


def test_errors_carry_codes_and_statuses() -> None:
    """Refusals keep the rule's code; unknown tickets and hidden ones read the same."""
    refused = TicketRefused(Refused("not_assignee", "ask bob"))
    assert (refused.http_status, refused.code, refused.message) == (403, "not_assignee", "ask bob")
    assert TicketNotFound(1042).message == TicketNotFound("T-1042").message
    assert TicketNotFound(1042).http_status == 404


def test_help_ticket_title_and_machine_facts() -> None:
    """A help request's first line names the ticket; facts are cleaned, capped and listed."""
    facts = {
        "hostname": "web07\x1b[2J",
        "os": "Debian",
        "kernel": "k" * 300,
        "arch": 7,
        "users": ["ann", "b\u202eob"] + [f"u{i}" for i in range(70)],
        "secret": "not shown",
    }
    title, description = help_ticket("web07", "  Mail\x1b is down\nsince 9:00  ", facts)
    assert title == "Help request from web07: Mail is down"
    assert description.startswith("Mail is down\nsince 9:00\n\n--- machine web07 ---\n")
    lines = facts_text(facts).splitlines()
    assert lines[0] == "hostname: web07[2J"
    assert lines[2] == "kernel: " + "k" * 256
    assert lines[3] == "arch: 7"
    assert "secret" not in description
    assert lines[4] == "users: " + ", ".join(["ann", "bob"] + [f"u{i}" for i in range(62)])
    assert facts_text({}) == ""


def test_help_ticket_leaves_out_empty_facts() -> None:
    """A machine with nobody logged in (or a fact left blank) gets no empty "users:" or
    "os:" line in its help ticket: only facts with a value are listed."""
    facts = {"hostname": "web07", "os": "  ", "users": []}
    _, description = help_ticket("web07", "Mail is down", facts)
    assert description.endswith("--- machine web07 ---\nhostname: web07")
    assert "users:" not in facts_text({"users": ["", "\x1b"]})
    assert facts_text({"users": ["", "ann"]}) == "users: ann"


def test_cli_ticket_ids_and_safe_output() -> None:
    """The CLI takes T-1042 or 1042 and refuses anything else; printed text is inert."""
    assert ticket_path("1042") == ticket_path("T-1042") == "/tickets/T-1042"
    for bad in ("T-0", "abc", "1042/../x", "T-01"):
        with pytest.raises(CliError):
            ticket_path(bad)
    assert _safe("a\x1b[31mb\tc") == "a\\u001b[31mb    c"
