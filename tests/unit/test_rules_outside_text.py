"""The one rule for free text from outside: what is removed where it enters, and how stored
text is escaped on its way to a terminal."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from broker.rules.outside_text import UNWANTED, clean_line, clean_lines, escape_controls

CSI, OSC, RLO = "\x9b", "\x9d", "\u202e"


def test_clean_line_removes_c1_bidi_and_breaks() -> None:
    """U+009B (CSI), U+009D (OSC), bidi overrides, tag characters go; breaks become a space."""
    raw = f"  needs {CSI}31m root{OSC}0;x\x07 {RLO}gnp.exe\r\non\tweb01\U000e0041 \ufeff "
    assert clean_line(raw) == "needs 31m root0;x gnp.exe on web01"
    assert clean_line("abc def", 4) == "abc"
    assert clean_line("abc", 0) == ""
    assert clean_line("abc", -1) == ""


def test_clean_lines_keeps_tab_and_line_feed() -> None:
    raw = f"line 1\r\nline\t2\rline 3\u2028{CSI}2J{RLO}end\x00\n"
    assert clean_lines(raw) == "line 1\nline\t2\nline 3\n2Jend"


def test_escape_controls_hides_nothing_and_stays_json() -> None:
    """Every non-printable character is shown as JSON's own escape; printable text stays."""
    assert escape_controls("Grüße, web01") == "Grüße, web01"
    shown = escape_controls(f"a{CSI}b{OSC}c{RLO}d\te\nf\x7f\U000e0041")
    assert shown == "a\\u009bb\\u009dc\\u202ed\\u0009e\\u000af\\u007f\\udb40\\udc41"
    assert json.loads(f'"{shown}"') == f"a{CSI}b{OSC}c{RLO}d\te\nf\x7f\U000e0041"
    assert escape_controls(f"a\tb\n{CSI}", keep_breaks=True) == "a\tb\n\\u009b"


@given(st.text())
def test_cleaned_text_holds_nothing_unwanted(text: str) -> None:
    for cleaned in (clean_line(text), clean_lines(text)):
        assert UNWANTED.search(cleaned) is None
        assert clean_lines(cleaned) == cleaned
    assert "\n" not in clean_line(text)


@given(st.text())
def test_escaped_text_is_printable(text: str) -> None:
    assert escape_controls(text).isprintable()
    kept = escape_controls(text, keep_breaks=True).replace("\t", " ")
    assert all(line.isprintable() for line in kept.split("\n"))


@given(st.dictionaries(st.text(), st.lists(st.text() | st.integers())))
def test_escaped_json_is_the_same_json(data: dict[str, list[str | int]]) -> None:
    """Escaping JSON text (as the CLI prints it) never changes what the JSON says."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    shown = escape_controls(text, keep_breaks=True)
    assert json.loads(shown) == data
    assert "\t" not in shown
