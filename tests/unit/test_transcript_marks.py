"""Shell-integration marks parser and command tracker (pure, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.transcript.marks import (
    MAX_COMMAND_CHARS,
    MAX_PAYLOAD,
    MAX_TYPED_BYTES,
    Command,
    CommandEnd,
    CommandLine,
    CommandStart,
    CommandTracker,
    InputStart,
    Mark,
    MarkParser,
    PromptStart,
    decode_command_line,
)

ESC = b"\x1b"
BEL = b"\x07"
ST = b"\x1b\\"


def osc(body: bytes, end: bytes = BEL) -> bytes:
    return b"\x1b]" + body + end


def feed_all(chunks: list[bytes]) -> tuple[bytes, list[Mark]]:
    parser = MarkParser()
    out: list[bytes] = []
    marks: list[Mark] = []
    for chunk in chunks:
        forward, found = parser.feed(chunk)
        out.append(forward)
        marks.extend(found)
    out.append(parser.close())
    return b"".join(out), marks


def kinds(marks: list[Mark]) -> list[object]:
    return [(type(m).__name__, getattr(m, "text", getattr(m, "exit_status", None))) for m in marks]


# -- parser -----------------------------------------------------------------------------


def test_plain_output_is_forwarded_without_copy() -> None:
    """Output without an OSC start is returned as the very same object."""
    parser = MarkParser()
    data = b"hello \x1b[31mred\x1b[0m\r\n"
    forward, marks = parser.feed(data)
    assert forward is data
    assert marks == []


def test_empty_chunk_gives_nothing() -> None:
    """An empty chunk forwards nothing and completes no mark."""
    assert MarkParser().feed(b"") == (b"", [])


def test_shell_marks_are_parsed_and_kept_in_forward() -> None:
    """133 A/B/C/D and 633 E become marks and stay in the forwarded stream."""
    stream = (
        osc(b"133;A")
        + b"$ "
        + osc(b"133;B")
        + b"ls\r\n"
        + osc(b"633;E;ls -l")
        + osc(b"133;C")
        + b"out\r\n"
        + osc(b"133;D;2")
    )
    forward, marks = feed_all([stream])
    assert forward == stream
    assert marks == [
        PromptStart(offset=8),
        InputStart(offset=18),
        CommandLine("ls -l", offset=36),
        CommandStart(offset=44),
        CommandEnd(2, offset=59),
    ]


def test_string_terminator_is_accepted() -> None:
    """ST (ESC backslash) ends a mark as BEL does."""
    forward, marks = feed_all([osc(b"133;A", ST)])
    assert forward == osc(b"133;A", ST)
    assert kinds(marks) == [("PromptStart", None)]


def test_633_variants_of_abcd_are_accepted() -> None:
    """VS Code's 633 A-D are read like 133's."""
    _, marks = feed_all([osc(b"633;A") + osc(b"633;B") + osc(b"633;C") + osc(b"633;D")])
    assert kinds(marks) == [
        ("PromptStart", None),
        ("InputStart", None),
        ("CommandStart", None),
        ("CommandEnd", None),
    ]


def test_prompt_start_with_extra_parameters() -> None:
    """Parameters after the letter (133;A;aid=1) do not hide the mark."""
    _, marks = feed_all([osc(b"133;A;aid=1")])
    assert kinds(marks) == [("PromptStart", None)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"133;D", None),
        (b"133;D;0", 0),
        (b"133;D;130", 130),
        (b"133;D;-1", -1),
        (b"133;D;1;aid=3", 1),
        (b"133;D;x", None),
        (b"133;D;", None),
        (b"133;D;99999999999", None),
        (b"133;D;2147483648", None),
        (b"133;D;-2147483648", -(2**31)),
    ],
)
def test_command_end_status(body: bytes, status: int | None) -> None:
    """An exit status is kept when it is a 32-bit integer, else it is unknown."""
    _, marks = feed_all([osc(body)])
    assert len(marks) == 1
    assert isinstance(marks[0], CommandEnd)
    assert marks[0].exit_status == status


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"633;E;echo a\\x3bb", "echo a;b"),
        (b"633;E;c:\\\\dir", "c:\\dir"),
        (b"633;E;tab\\x09x", "tab\tx"),
        (b"633;E;ls;nonce123", "ls"),
        (b"633;E", ""),
        (b"633;E;", ""),
        (b"633;E;caf\\xc3\\xa9", "café"),
        (b"633;E;bad\\xff", "bad\ufffd"),
        (b"633;E;keep\\q", "keep\\q"),
    ],
)
def test_command_line_decoding(body: bytes, text: str) -> None:
    """The command line's escapes are undone and invalid UTF-8 is replaced."""
    _, marks = feed_all([osc(body)])
    assert marks == [CommandLine(text, offset=len(osc(body)))]


@pytest.mark.parametrize("body", [b"133;P;k=v", b"133;", b"133", b"133;Z", b"633;Q"])
def test_unknown_shell_marks_give_nothing(body: bytes) -> None:
    """Letters we do not know, or no letter at all, complete no mark."""
    forward, marks = feed_all([osc(body)])
    assert forward == osc(body)
    assert marks == []


@pytest.mark.parametrize(
    "seq",
    [
        osc(b"0;window title"),
        osc(b"52;c;aGVsbG8="),
        osc(b""),
        osc(b"1234567;x"),
        osc(b"l title"),
        osc(b"8;;http://x", ST),
    ],
)
def test_other_osc_sequences_pass_untouched(seq: bytes) -> None:
    """OSC sequences that are not marks are forwarded as they are, without a mark."""
    forward, marks = feed_all([b"a" + seq + b"b"])
    assert forward == b"a" + seq + b"b"
    assert marks == []


def test_6973_sequences_are_forwarded_like_any_other() -> None:
    """The former in-band echo marker is a program's output like any other: forwarded
    whole, in any chunking, and never a mark (echo comes from the agent's input reports)."""
    for end in (BEL, ST):
        stream = b"pw: " + osc(b"6973;echo;on", end) + b"x" + osc(b"6973;echo;off", end) + b"y"
        for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
            assert feed_all(chunks) == (stream, [])


def test_abort_by_escape_starts_a_new_sequence() -> None:
    """ESC inside a mark aborts it, and that ESC may open the next mark."""
    stream = b"\x1b]133;A" + osc(b"133;B")
    forward, marks = feed_all([stream])
    assert forward == stream
    assert kinds(marks) == [("InputStart", None)]


def test_can_and_sub_abort_a_mark() -> None:
    """CAN and SUB abort a mark; the byte itself is forwarded."""
    for stop in (b"\x18", b"\x1a"):
        forward, marks = feed_all([b"\x1b]133;A" + stop + b"rest"])
        assert forward == b"\x1b]133;A" + stop + b"rest"
        assert marks == []


def test_lone_escape_at_chunk_end_is_held_then_forwarded() -> None:
    """An ESC ending a chunk waits for the next byte; if not ']' it is forwarded."""
    parser = MarkParser()
    assert parser.feed(b"abc\x1b") == (b"abc", [])
    assert parser.feed(b"[0m") == (b"\x1b[0m", [])


def test_escape_escape_bracket() -> None:
    """ESC ESC ] forwards the first ESC and opens an OSC with the second."""
    forward, marks = feed_all([b"\x1b", b"\x1b", b"]133;A\x07"])
    assert forward == b"\x1b" + osc(b"133;A")
    assert kinds(marks) == [("PromptStart", None)]


def test_overlong_shell_mark_gives_no_mark() -> None:
    """A non-E mark whose payload passes the cap is forwarded and ignored."""
    seq = osc(b"133;A;" + b"x" * MAX_PAYLOAD)
    forward, marks = feed_all([seq])
    assert forward == seq
    assert marks == []


def test_overlong_command_line_is_truncated() -> None:
    """A 633;E line past the cap still yields its beginning, marked as cut."""
    seq = osc(b"633;E;" + b"a" * (MAX_PAYLOAD + 100))
    forward, marks = feed_all([seq])
    assert forward == seq
    assert len(marks) == 1
    assert isinstance(marks[0], CommandLine)
    assert marks[0].text == "a" * MAX_COMMAND_CHARS + "…"


def test_never_ending_osc_is_streamed_not_buffered() -> None:
    """A hostile OSC that never ends is forwarded as it comes, with bounded memory."""
    parser = MarkParser()
    parser.feed(b"\x1b]133;A;")
    total = 0
    for _ in range(100):
        forward, marks = parser.feed(b"y" * 10000)
        total += len(forward)
        assert marks == []
    assert total == 1_000_000
    assert parser.close() == b""


def test_close_returns_held_bytes() -> None:
    """Bytes held back at the end of the stream are returned by close."""
    parser = MarkParser()
    assert parser.feed(b"x\x1b]13") == (b"x", [])
    assert parser.close() == b"\x1b]13"
    assert parser.feed(b"z") == (b"z", [])


def test_osc_number_split_across_chunks() -> None:
    """The OSC number may be split at any byte."""
    forward, marks = feed_all([b"\x1b]", b"1", b"33", b";", b"D;", b"7", b"\x1b", b"\\"])
    assert forward == b"\x1b]133;D;7\x1b\\"
    assert marks == [CommandEnd(7, offset=len(forward))]


def test_decode_command_line_truncated_drops_partial_escape() -> None:
    """A cut inside an escape drops the partial escape."""
    assert decode_command_line(b"ab\\x4", truncated=True) == "ab…"
    assert decode_command_line(b"ab\\", truncated=True) == "ab…"
    assert decode_command_line(b"ab\\x", truncated=True) == "ab…"


def test_decode_command_line_caps_length() -> None:
    """A decoded command line is capped at MAX_COMMAND_CHARS."""
    text = decode_command_line(b"b" * (MAX_COMMAND_CHARS + 5))
    assert text == "b" * MAX_COMMAND_CHARS + "…"


_INTERESTING = st.sampled_from(
    [
        b"\x1b",
        b"]",
        b"\x1b]6973;",
        b"\x1b]133;",
        b"\x1b\\",
        b"\x07",
        b"\\",
        b";",
        b"133",
        b"633",
        b"6973",
        b"echo;off",
        b"echo;on",
        b"A",
        b"B",
        b"C",
        b"D;0",
        b"E;ls\\x3b",
        b"\x18",
        b"\x1a",
        b"x",
        b"\r\n",
        b"\xe2\x82",
    ]
)
_STREAMS = st.one_of(
    st.binary(max_size=300),
    st.lists(_INTERESTING, max_size=60).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(stream=_STREAMS, cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12))
def test_any_chunking_gives_the_same_result(stream: bytes, cuts: list[int]) -> None:
    """Feeding a stream in any chunking forwards the same bytes and marks as feeding it whole."""
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed_all(chunks) == feed_all([stream])


@settings(max_examples=300, deadline=None)
@given(stream=_STREAMS)
def test_no_byte_is_ever_removed(stream: bytes) -> None:
    """Forward is exactly the input, byte by byte fed; mark offsets stay in order."""
    forward, marks = feed_all([stream[i : i + 1] for i in range(len(stream))])
    assert forward == stream
    offsets = [m.offset for m in marks]
    assert offsets == sorted(offsets)
    assert all(0 <= o <= len(forward) for o in offsets)


# -- command tracker --------------------------------------------------------------------


def run(tracker: CommandTracker, steps: list[tuple[bytes, float]], parser: MarkParser) -> None:
    for data, now in steps:
        forward, marks = parser.feed(data)
        tracker.observe(forward, marks, now)


def test_tracker_uses_the_shell_command_line() -> None:
    """A 633;E line is the command; start, duration and status come from C and D."""
    tracker, parser = CommandTracker(100.0), MarkParser()
    run(
        tracker,
        [
            (osc(b"133;A") + b"$ " + osc(b"133;B"), 100.5),
            (b"l", 101.0),
            (b"s\r\n" + osc(b"633;E;ls") + osc(b"133;C"), 102.0),
            (b"a b\r\n", 102.5),
            (osc(b"133;D;0"), 103.25),
        ],
        parser,
    )
    assert tracker.commands == (Command("ls", 2.0, 1.25, 0),)


def test_tracker_falls_back_to_the_typed_text() -> None:
    """Without 633;E, the echoed text between B and C, rendered, is the command."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(
        tracker,
        [
            (osc(b"133;A") + b"\x1b[32m$\x1b[0m " + osc(b"133;B") + b"lx", 1.0),
            (b"\b\x1b[Ks -la\r\n" + osc(b"133;C"), 2.0),
            (osc(b"133;D;1"), 3.0),
        ],
        parser,
    )
    assert tracker.commands == (Command("ls -la", 2.0, 1.0, 1),)


def test_tracker_without_input_start_has_empty_line() -> None:
    """A C without B or E gives an empty command line, not a crash."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(tracker, [(osc(b"133;C"), 1.0), (osc(b"133;D;0"), 2.0)], parser)
    assert tracker.commands == (Command("", 1.0, 1.0, 0),)


def test_tracker_closes_a_command_on_a_new_prompt() -> None:
    """A prompt without an end mark closes the running command with unknown status."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(
        tracker,
        [(osc(b"633;E;sleep 9") + osc(b"133;C"), 1.0), (osc(b"133;A"), 4.0)],
        parser,
    )
    assert tracker.commands == (Command("sleep 9", 1.0, 3.0, None),)


def test_tracker_closes_a_command_on_a_second_start() -> None:
    """Two C marks in a row close the first with unknown status."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(
        tracker,
        [
            (osc(b"633;E;a") + osc(b"133;C"), 1.0),
            (osc(b"633;E;b") + osc(b"133;C"), 2.0),
            (osc(b"133;D;5"), 3.0),
        ],
        parser,
    )
    assert tracker.commands == (Command("a", 1.0, 1.0, None), Command("b", 2.0, 1.0, 5))


def test_tracker_ignores_end_without_start_and_echo_marks() -> None:
    """An empty command line (D without C) and echo changes add no command."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(
        tracker,
        [(osc(b"133;A") + osc(b"133;B") + b"\r\n" + osc(b"133;D") + osc(b"6973;echo;off"), 1.0)],
        parser,
    )
    assert tracker.commands == ()
    assert tracker.finish(2.0) == ()


def test_tracker_finish_closes_the_running_command() -> None:
    """At the end of the session a running command ends with unknown status."""
    tracker, parser = CommandTracker(10.0), MarkParser()
    run(tracker, [(osc(b"633;E;top") + osc(b"133;C"), 11.0)], parser)
    assert tracker.commands == ()
    assert tracker.finish(15.0) == (Command("top", 1.0, 4.0, None),)


def test_tracker_caps_the_number_of_commands() -> None:
    """Past max_commands, commands are counted as dropped, not kept."""
    tracker, parser = CommandTracker(0.0, max_commands=2), MarkParser()
    for i in range(4):
        run(tracker, [(osc(b"633;E;c") + osc(b"133;C") + osc(b"133;D;0"), float(i))], parser)
    assert len(tracker.commands) == 2
    assert tracker.dropped == 2


def test_tracker_caps_the_typed_text() -> None:
    """The typed text kept for the fallback is capped."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(
        tracker,
        [(osc(b"133;B") + b"x" * (MAX_TYPED_BYTES * 2), 1.0), (osc(b"133;C"), 2.0)],
        parser,
    )
    tracker.finish(3.0)
    (command,) = tracker.commands
    assert command.command_line == "x" * MAX_TYPED_BYTES


def test_tracker_shows_control_characters_in_command_lines() -> None:
    """Control and bidi characters in a command line are shown escaped, never raw."""
    tracker, parser = CommandTracker(0.0), MarkParser()
    run(
        tracker,
        [(osc(b"633;E;rm \\x1b[2J\xe2\x80\xae") + osc(b"133;C") + osc(b"133;D;0"), 1.0)],
        parser,
    )
    assert tracker.commands[0].command_line == "rm \\x1b[2J\\u202e"


def test_tracker_clamps_offsets_outside_the_chunk() -> None:
    """Marks whose offsets lie outside the chunk given are clamped, not trusted."""
    tracker = CommandTracker(0.0)
    tracker.observe(b"abc", [InputStart(offset=-5)], 1.0)
    tracker.observe(b"def", [CommandStart(offset=999)], 2.0)
    tracker.observe(b"", [CommandEnd(0, offset=6)], 3.0)
    assert tracker.commands == (Command("abcdef", 2.0, 1.0, 0),)
