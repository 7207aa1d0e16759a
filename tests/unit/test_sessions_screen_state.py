"""The first frame of a joiner: the current screen rebuilt from the session's latest output."""

from __future__ import annotations

import pyte

from broker.sessions.screen_state import TAIL_BYTES, ScreenTail


def screen_of(data: bytes, cols: int, rows: int) -> pyte.Screen:
    screen = pyte.Screen(cols, rows)
    pyte.ByteStream(screen).feed(data)
    return screen


def cells(screen: pyte.Screen) -> list[list[tuple[str, str, str, bool, bool]]]:
    return [
        [
            (c.data, c.fg, c.bg, c.bold, c.reverse)
            for c in (screen.buffer[y][x] for x in range(screen.columns))
        ]
        for y in range(screen.lines)
    ]


def assert_same_screen(output: bytes, tail: ScreenTail) -> None:
    """What a terminal shows after the whole output equals what it shows after the frame."""
    whole = screen_of(output, tail.cols, tail.rows)
    frame = screen_of(tail.render(), tail.cols, tail.rows)
    assert frame.display == whole.display
    assert cells(frame) == cells(whole)
    assert (frame.cursor.x, frame.cursor.y) == (whole.cursor.x, whole.cursor.y)


def test_nothing_printed_gives_no_frame() -> None:
    """A session that printed nothing yet has no first frame to send."""
    assert ScreenTail(80, 24).render() == b""


def test_frame_redraws_text_colours_and_cursor() -> None:
    """Coloured output, a wide character and a prompt with the cursor after it come back as
    the same cells and the same cursor position."""
    output = (
        b"\x1b[01;34mbin\x1b[0m  \x1b[32mrun.sh\x1b[0m  \xe6\x97\xa5\xe6\x9c\xac  "
        b"\x1b[38;5;208morange\x1b[0m \x1b[48;2;10;20;30mtrue\x1b[0m \x1b[7mrev\x1b[0m\r\n"
        b"bob@web01:~$ echo h"
    )
    tail = ScreenTail(40, 6)
    tail.feed(output)
    assert_same_screen(output, tail)


def test_scrolled_output_far_beyond_the_tail_shows_the_last_screen() -> None:
    """After scrolling output many times the tail's size (about 150 KB against 16 KB) the
    frame holds the last screen, and its cost is bounded by the tail, not by the output.
    (The reference emulator replays all of it, so more output only makes the test slow.)"""
    tail = ScreenTail(80, 24)
    output = b"".join(b"line %d \x1b[33m%s\x1b[0m\r\n" % (i, b"x" * (i % 50)) for i in range(4000))
    for at in range(0, len(output), 4096):
        tail.feed(output[at : at + 4096])
    assert len(tail.replay()) <= TAIL_BYTES
    assert_same_screen(output, tail)
    assert "line 3999" in screen_of(tail.render(), 80, 24).display[-2]


def test_a_full_clear_starts_the_replay() -> None:
    """`clear` then a prompt: nothing from before the clear is drawn."""
    tail = ScreenTail(80, 24)
    output = b"secret-before\r\n" * 5 + b"\x1b[H\x1b[2J\x1b[3Jbob@web01:~$ "
    tail.feed(output)
    assert tail.replay().startswith(b"\x1b[2J")
    assert_same_screen(output, tail)
    assert "secret-before" not in "".join(screen_of(tail.render(), 80, 24).display)


def test_full_screen_program_and_resize() -> None:
    """A program that draws with cursor addressing is redrawn at the size set last, with
    application cursor keys left on as the program set them."""
    tail = ScreenTail(80, 24)
    tail.resize(100, 30)
    output = b"\x1b[?1h\x1b[H\x1b[2J\x1b[1;1Htop - 10:00\x1b[5;10H\x1b[1mPID USER\x1b[0m\x1b[30;1H:"
    tail.feed(output)
    assert_same_screen(output, tail)
    frame = tail.render()
    assert b"\x1b[?1h" in frame
    assert screen_of(frame, 100, 30).display[4].startswith(" " * 9 + "PID USER")
