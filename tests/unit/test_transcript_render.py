"""Plain-text rendering of terminal output: escapes inert, line editing applied."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.transcript.marks import Command
from broker.transcript.render import (
    MAX_LINE,
    TextRenderer,
    commands_to_dicts,
    render_lines,
    render_text,
    visible_controls,
)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("plain\r\n", "plain\n"),
        ("a\nb", "a\nb\n"),
        ("a\x0bb\x0cc\n", "a\nb\nc\n"),
        ("\x1b[1;31mred\x1b[0m\r\n", "red\n"),
        ("\x9b31mred\x9b0m\n", "red\n"),
        ("\x1b]0;title\x07after\n", "after\n"),
        ("\x1b]133;A\x1b\\$ \x1b]633;E;ls\x07\x1b]6973;echo;off\x07\n", "$\n"),
        ("\x9d0;title\x9cafter\n", "after\n"),
        ("\x1bPq#0;2;0;0;0\x07more\x1b\\after\n", "after\n"),
        ("\x90dcs\x9cafter\n", "after\n"),
        ("\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\x\n", "x\n"),
        ("\x1b(B\x1b)0\x1b#8\x1b%Gtext\n", "text\n"),
        ("\x1b7\x1b8\x1b=\x1b>\x1bMtext\n", "text\n"),
        ("lone\x1b\x01esc\n", "loneesc\n"),
        ("esc at end\x1b", "esc at end\n"),
        ("\x1b\x1b[31mx\n", "x\n"),
        ("\x1b]0;abort\x1b[32mshown\n", "shown\n"),
        ("\x1b]0;can\x18shown\n", "shown\n"),
        ("\x1b[31\x18shown\n", "shown\n"),
        ("\x1b[31\x1b[32mx\n", "x\n"),
        ("\x1b[31é\n", "é\n"),
        ("\x1b(\x01x\n", "x\n"),
        ("bell\x07\x00\x7f\x85!\n", "bell!\n"),
        ("abc\rX\n", "Xbc\n"),
        ("abc\b\bX\n", "aXc\n"),
        ("\b\bX\n", "X\n"),
        ("a\tb\n", "a       b\n"),
        ("abcdef\x1b[3D\x1b[K\n", "abc\n"),
        ("abcdef\x1b[3D\x1b[1K\n", "    ef\n"),
        ("ab\x1b[10D\x1b[1K\n", " b\n"),
        ("abcdef\x1b[2K\n", "\n"),
        ("abc\x1b[0K\n", "abc\n"),
        ("abc\x1b[3K\n", "abc\n"),
        ("a\x1b\x18b\n", "ab\n"),
        ("a\x1b(\x1ab\n", "ab\n"),
        ("a\x1b[3Cb\n", "a   b\n"),
        ("a\x1b[Cb\n", "a b\n"),
        ("abc\x1b[Dx\n", "abx\n"),
        ("abcdef\x1b[3Gx\n", "abxdef\n"),
        ("abcdef\x1b[Gx\n", "xbcdef\n"),
        ("abcdef\x1b[3D\x1b[2P\n", "abcf\n"),
        ("abcdef\x1b[3D\x1b[P\n", "abcef\n"),
        ("abcdef\x1b[3D\x1b[2@XY\n", "abcXYdef\n"),
        ("abc\x1b[@X\n", "abcX\n"),
        ("abc\x1b[?25l\x1b[1;1H\x1b[2J\x1b[5;3K\n", "abc\n"),
        ("trailing   \n", "trailing\n"),
        ("", ""),
    ],
)
def test_rendering(raw: str, text: str) -> None:
    """Each control and sequence has the documented effect, or none."""
    assert render_text(raw) == text


def test_sequences_split_across_feeds() -> None:
    """An escape sequence split across feeds is still removed."""
    pieces = ["a\x1b", "[3", "1mb\x1b]0;ti", "tle\x1b", "\\c\r", "\nd"]
    assert list(render_lines(pieces)) == ["abc", "d"]


def test_feed_returns_completed_lines_and_partial_flag() -> None:
    """feed returns finished lines; a half-drawn line is reported as partial."""
    renderer = TextRenderer()
    assert renderer.feed("one\r\ntwo") == ["one"]
    assert renderer.partial
    assert renderer.finish() == ["two"]
    assert not renderer.partial
    assert renderer.finish() == []


def test_long_lines_wrap_at_the_cap() -> None:
    """A line longer than MAX_LINE wraps instead of growing without bound."""
    lines = render_text("x" * (MAX_LINE + 10)).splitlines()
    assert [len(line) for line in lines] == [MAX_LINE, 10]


def test_cursor_moves_are_capped() -> None:
    """Huge cursor parameters cannot make a line larger than the cap: it wraps."""
    renderer = TextRenderer()
    lines = renderer.feed("a\x1b[999999999Cb") + renderer.finish()
    assert lines == ["a", "b"]


def test_insert_keeps_the_line_cap() -> None:
    """Inserting blanks into a full line does not pass the cap."""
    renderer = TextRenderer()
    renderer.feed("y" * MAX_LINE + "\x1b[G\x1b[50@")
    (line,) = renderer.finish()
    assert len(line) == MAX_LINE


def test_long_csi_parameters_are_bounded() -> None:
    """A CSI with endless parameters is consumed without effect."""
    assert render_text("\x1b[" + "1;" * 5000 + "mtext\n") == "text\n"


def test_tab_stops_at_the_cap() -> None:
    """A tab at the end of a full line does not move past the cap."""
    renderer = TextRenderer()
    renderer.feed("z" * (MAX_LINE - 1) + "\t")
    assert [len(line) for line in renderer.finish()] == [MAX_LINE - 1]


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab\x1b[]0;?mK\x07\\\r\n\b\x9b\x9c\x9d\x18\t7P"), max_size=200)
)
def test_rendered_text_holds_no_control_characters(raw: str) -> None:
    """Whatever the output, the rendering holds only printable text, tabs expanded."""
    text = render_text(raw)
    assert not any((ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F for ch in text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100), st.lists(st.integers(min_value=0, max_value=100), max_size=6))
def test_rendering_is_independent_of_chunking(raw: str, cuts: list[int]) -> None:
    """Rendering in pieces gives the same lines as rendering at once."""
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert list(render_lines(pieces)) == list(render_lines([raw]))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("ls -l", "ls -l"),
        ("a\tb\nc", "a\tb\nc"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),
        ("evil\u202eexe.txt", "evil\\u202eexe.txt"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
    ],
)
def test_visible_controls(raw: str, shown: str) -> None:
    """Control, bidi and invisible characters are shown escaped; tab and newline stay."""
    assert visible_controls(raw) == shown


def test_commands_to_dicts() -> None:
    """Commands become JSON-able dicts with rounded times."""
    commands = [Command("ls", 1.23456, 0.5, 0), Command("top", 2.0, None, None)]
    assert commands_to_dicts(commands) == [
        {"command": "ls", "start": 1.235, "duration": 0.5, "exit_status": 0},
        {"command": "top", "start": 2.0, "duration": None, "exit_status": None},
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \r\n\t\b\x1b[K7"), max_size=200))
def test_whole_lines_render_as_character_by_character(raw: str) -> None:
    """Output fed at once (whole plain lines taken in bulk) renders exactly as the same
    output fed one character at a time."""
    assert list(render_lines([raw])) == list(render_lines(list(raw)))


def test_long_plain_output_renders_line_by_line() -> None:
    """A long run of short lines (`yes` through a PTY) renders every line, trailing blanks
    and carriage returns dropped, and lines over the cap still wrap."""
    renderer = TextRenderer()
    lines = renderer.feed("y\r\n" * 100_000 + "a  \r\r\n" + "w" * (MAX_LINE + 1) + "\n")
    assert lines[:2] == ["y", "y"]
    assert len(lines) == 100_003
    assert lines[100_000] == "a"
    assert [len(line) for line in lines[-2:]] == [MAX_LINE, 1]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0xA0), max_size=200))
def test_runs_of_dropped_controls_render_as_character_by_character(raw: str) -> None:
    """Any mix of text and C0/C1 controls fed at once (runs of dropped controls skipped in
    bulk) renders exactly as the same output fed one character at a time."""
    assert list(render_lines([raw])) == list(render_lines(list(raw)))


def test_a_long_run_of_nul_renders_to_nothing() -> None:
    """A megabyte of NUL (`head -c` of /dev/zero) and other dropped controls between two
    words leaves the words, on one line."""
    renderer = TextRenderer()
    assert renderer.feed("a" + "\x00" * 1_000_000 + "\x01\x7f\x85" * 1000 + "b\n") == ["ab"]
