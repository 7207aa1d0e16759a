"""The first frame of a participant who joins mid-session: the current screen, rebuilt from
the session's latest output (pure: no I/O, no clock).

A VT emulator in pure Python (pyte) parses about half a megabyte a second: fed every byte,
it would cost some 60 times the relay's whole budget at 30 MB/s. So it never runs on the hot
path. The hub only appends each output chunk to a bounded tail (:meth:`ScreenTail.feed`: a
bytearray append, trimmed in amortised O(1)); a join replays the part of that tail that
decides the screen (from the last full-screen clear, else the last ``rows + 1`` lines, at
most :data:`TAIL_BYTES`) into a fresh pyte screen of the session's size and renders it as
ANSI bytes (:meth:`ScreenTail.render`). docs/sessions.md has the measured costs.

What is rebuilt: characters with colours (16, 256 and true colour), bold, italics,
underline, strikethrough, reverse and blink; the cursor position and visibility; application
cursor keys and bracketed paste (so a joiner's arrow keys and pastes work as the owner's).
What is not: the scrollback above the screen, and the alternate screen as a separate
buffer (a full-screen program is shown as it is drawn).
"""

from __future__ import annotations

from typing import Final

import pyte
from pyte.graphics import BG_AIXTERM, BG_ANSI, FG_AIXTERM, FG_ANSI
from pyte.screens import Char

# Bounds the replay on a join to ~70 ms of pyte (a 16 KiB line with no break, the worst
# case); 50 lines of coloured text at 160x50 take ~25 ms, at 80x24 ~8 ms.
TAIL_BYTES: Final = 16 << 10
# A full clear: what follows it alone decides the screen (``clear``, ``reset``, curses).
_CLEARS: Final = (b"\x1b[2J", b"\x1bc")
_FG: Final = {name: code for code, name in {**FG_ANSI, **FG_AIXTERM}.items()}
_BG: Final = {name: code for code, name in {**BG_ANSI, **BG_AIXTERM}.items()}
# Modes a program sets once and then relies on: carried over from before the replay's start.
_MODES: Final = (
    (b"\x1b[?1h", b"\x1b[?1l"),
    (b"\x1b[?25h", b"\x1b[?25l"),
    (b"\x1b[?2004h", b"\x1b[?2004l"),
)
# pyte keeps a private mode N as N << 5.
_CURSOR_KEYS: Final = 1 << 5
_CURSOR_SHOWN: Final = 25 << 5
_BRACKETED_PASTE: Final = 2004 << 5


class ScreenTail:
    """The last output of a session and its size; renders the current screen on demand."""

    def __init__(self, cols: int, rows: int, limit: int = TAIL_BYTES) -> None:
        self.cols, self.rows = cols, rows
        self._limit = limit
        self._tail = bytearray()
        self._trimmed = False

    def feed(self, data: bytes) -> None:
        """Output the terminals got. The hot path: an append, and a trim now and then."""
        tail = self._tail
        tail += data
        if len(tail) > 2 * self._limit:
            # Trimming at twice the limit keeps the cost per byte constant.
            del tail[: len(tail) - self._limit]
            self._trimmed = True

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows

    def replay(self) -> bytes:
        """The part of the tail that decides the current screen, after the last setting of
        each mode in :data:`_MODES` made before it."""
        data = bytes(self._tail[-self._limit :])
        start = self._start(data, self._trimmed or len(self._tail) > self._limit)
        before = data[:start]
        modes = b""
        for on, off in _MODES:
            at_on, at_off = before.rfind(on), before.rfind(off)
            if at_on != at_off:
                modes += on if at_on > at_off else off
        return modes + data[start:]

    def _start(self, data: bytes, trimmed: bool) -> int:
        clear = max(data.rfind(mark) for mark in _CLEARS)
        if clear >= 0:
            return clear
        end = len(data)
        for _ in range(self.rows + 1):
            end = data.rfind(b"\n", 0, end)
            if end < 0:
                break
        if end >= 0:
            return end + 1
        # Cut somewhere in the middle: start at a line, not inside an escape sequence.
        return data.find(b"\n") + 1 if trimmed else 0

    def render(self) -> bytes:
        """The current screen as bytes that draw it on a terminal of the same size, or
        nothing when the session has printed nothing yet."""
        if not self._tail:
            return b""
        screen = pyte.Screen(self.cols, self.rows)
        pyte.ByteStream(screen).feed(self.replay())
        return render_screen(screen)


def _sgr(char: Char) -> str:
    codes = ["0"]
    if char.bold:
        codes.append("1")
    if char.italics:
        codes.append("3")
    if char.underscore:
        codes.append("4")
    if char.blink:
        codes.append("5")
    if char.reverse:
        codes.append("7")
    if char.strikethrough:
        codes.append("9")
    codes += _colour(char.fg, _FG, "38")
    codes += _colour(char.bg, _BG, "48")
    return "\x1b[" + ";".join(codes) + "m"


def _colour(value: str, names: dict[str, int], extended: str) -> list[str]:
    if value == "default":
        return []
    if value in names:
        return [str(names[value])]
    if len(value) == 6:  # pyte keeps 256-colour and true-colour values as rrggbb
        try:
            r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
        except ValueError:
            return []
        return [extended, "2", str(r), str(g), str(b)]
    return []


def render_screen(screen: pyte.Screen) -> bytes:
    """Clear the terminal, draw every line with its attributes, put the cursor back."""
    out = ["\x1b[0m\x1b[H\x1b[2J"]
    plain = _sgr(screen.default_char)
    for y in range(screen.lines):
        line = screen.buffer[y]
        cells = [line[x] for x in range(screen.columns)]
        # Trailing blanks in the default style need not be drawn.
        while cells and cells[-1].data == " " and _sgr(cells[-1]) == plain:
            cells.pop()
        current = plain
        row = [f"\x1b[{y + 1};1H"]
        for cell in cells:
            style = _sgr(cell)
            if style != current:
                row.append(style)
                current = style
            row.append(cell.data)  # "" for the second half of a wide character
        if current != plain:
            row.append("\x1b[0m")
        out.append("".join(row))
    out.append(f"\x1b[{screen.cursor.y + 1};{screen.cursor.x + 1}H")
    out.append(_sgr(screen.cursor.attrs))  # the style the program goes on writing in
    out.append("\x1b[?1h" if _CURSOR_KEYS in screen.mode else "\x1b[?1l")
    out.append("\x1b[?2004h" if _BRACKETED_PASTE in screen.mode else "\x1b[?2004l")
    out.append("\x1b[?25h" if _CURSOR_SHOWN in screen.mode else "\x1b[?25l")
    return "".join(out).encode("utf-8")
