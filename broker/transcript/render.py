"""Plain-text rendering of terminal output, with every escape sequence made inert.

:class:`TextRenderer` is a streaming state machine over decoded text (``str``): it removes
CSI, OSC (the shell marks 133/633 and our private 6973 included), DCS/SOS/PM/APC strings,
charset selections and other ``ESC`` sequences, their 8-bit C1 forms, lone ``ESC`` and
other control characters. It keeps the effect of the few controls that decide what a line
reads like: ``\\r`` (back to column 0, later text overwrites), ``\\n``/VT/FF (next line),
backspace, tab, and the line-editing CSI finals readline uses (``K`` erase in line, ``C``/``D``
cursor right/left, ``G`` column, ``P`` delete, ``@`` insert). Everything else a full-screen
program does (cursor addressing, scrolling regions) is dropped: the text rendering is for
reading a shell session, the ``.cast`` file is the faithful record.

Sequences may be split across :meth:`TextRenderer.feed` calls. Lines are capped at
:data:`MAX_LINE` characters (longer ones wrap) so hostile output cannot grow a line without
bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from broker.transcript.marks import Command

MAX_LINE: Final = 4096
_MAX_PARAMS: Final = 64

# Runs of characters that are neither C0, DEL nor C1 controls: handled in bulk.
_PLAIN_RUN: Final = re.compile(r"[^\x00-\x1f\x7f-\x9f]+")
# Whole plain lines (ending in \n, optionally after \r), taken at once when no line is
# half drawn: the bulk of a long output (`yes`, a log) renders without a call per character.
_PLAIN_LINES: Final = re.compile(rf"(?:[^\x00-\x1f\x7f-\x9f]{{0,{MAX_LINE}}}\r*\n)+")
# Runs of the controls that _control drops (every C0/C1 control and DEL but the line
# controls, ESC, CSI and the string introducers), skipped at once: a transcript of
# `head -c 1G /dev/zero` was rendered one Python call per byte otherwise, minutes of the
# broker's CPU for the text attachment of its ticket note.
_INERT_RUN: Final = re.compile(r"[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f-\x8f\x91-\x97\x99\x9a\x9c]+")
# Characters that end or abort a control string (OSC, DCS, SOS, PM, APC).
_STRING_STOP: Final = re.compile(r"[\x07\x18\x1a\x1b\x9c]")

_GROUND, _ESC, _ESC_INTER, _CSI, _STRING, _STRING_ESC = range(6)
_LINE_BREAKS: Final = frozenset("\n\x0b\x0c")
_STRING_INTRODUCERS: Final = {"]": True, "P": False, "X": False, "^": False, "_": False}
_C1_STRINGS: Final = {"\x9d": True, "\x90": False, "\x98": False, "\x9e": False, "\x9f": False}


class TextRenderer:
    """Turn terminal output into plain lines, incrementally."""

    def __init__(self) -> None:
        self._line: list[str] = []
        self._col = 0
        self._state = _GROUND
        self._params: list[str] = []
        self._string_is_osc = False
        self._out: list[str] = []

    @property
    def partial(self) -> bool:
        """Whether a line is started but not finished (a prompt, say)."""
        return bool(self._line)

    def feed(self, text: str) -> list[str]:
        """Consume ``text``; return the lines it completed (without line ends)."""
        i = 0
        n = len(text)
        while i < n:
            state = self._state
            if state == _GROUND:
                if not self._line and not self._col:
                    lines = _PLAIN_LINES.match(text, i)
                    if lines is not None:
                        # Same result as writing each run and acting on \r and \n: a
                        # trailing \r only moves to column 0 before the line ends.
                        self._out.extend(
                            line.rstrip("\r").rstrip(" ") for line in lines.group().split("\n")[:-1]
                        )
                        i = lines.end()
                        continue
                m = _PLAIN_RUN.match(text, i)
                if m is not None:
                    self._write(m.group())
                    i = m.end()
                    continue
                m = _INERT_RUN.match(text, i)
                if m is not None:
                    i = m.end()
                    continue
                self._control(text[i])
                i += 1
            elif state in (_STRING, _STRING_ESC):
                i = self._string(text, i)
            else:
                self._escape(text[i])
                i += 1
        out, self._out = self._out, []
        return out

    def finish(self) -> list[str]:
        """End of output: return the last, unterminated line if it holds anything."""
        self._state = _GROUND
        if self._line:
            self._newline()
        out, self._out = self._out, []
        return out

    # -- ground state -------------------------------------------------------------

    def _write(self, run: str) -> None:
        while run:
            room = MAX_LINE - self._col
            if room <= 0:
                self._newline()
                continue
            part, run = run[:room], run[room:]
            line = self._line
            if self._col > len(line):
                line.extend(" " * (self._col - len(line)))
            line[self._col : self._col + len(part)] = part
            self._col += len(part)

    def _newline(self) -> None:
        self._out.append("".join(self._line).rstrip(" "))
        self._line = []
        self._col = 0

    def _control(self, ch: str) -> None:
        if ch == "\r":
            self._col = 0
        elif ch in _LINE_BREAKS:
            self._newline()
        elif ch == "\b":
            self._col = max(0, self._col - 1)
        elif ch == "\t":
            self._col = min(MAX_LINE, (self._col // 8 + 1) * 8)
        elif ch == "\x1b":
            self._state = _ESC
        elif ch == "\x9b":
            self._start_csi()
        elif ch in _C1_STRINGS:
            self._state = _STRING
            self._string_is_osc = _C1_STRINGS[ch]
        # Every other C0/C1 control and DEL is dropped: inert, nothing to show.

    # -- escape sequences -----------------------------------------------------------

    def _start_csi(self) -> None:
        self._state = _CSI
        self._params = []

    def _escape(self, ch: str) -> None:
        code = ord(ch)
        state = self._state
        if state == _ESC:
            if ch == "[":
                self._start_csi()
            elif ch in _STRING_INTRODUCERS:
                self._state = _STRING
                self._string_is_osc = _STRING_INTRODUCERS[ch]
            elif 0x20 <= code <= 0x2F:
                self._state = _ESC_INTER
            elif 0x30 <= code <= 0x7E:
                self._state = _GROUND
            else:
                self._abort(ch)
        elif state == _ESC_INTER:
            if 0x20 <= code <= 0x2F:
                return
            if 0x30 <= code <= 0x7E:
                self._state = _GROUND
            else:
                self._abort(ch)
        else:  # _CSI
            if 0x30 <= code <= 0x3F or 0x20 <= code <= 0x2F:
                if len(self._params) < _MAX_PARAMS:
                    self._params.append(ch)
            elif 0x40 <= code <= 0x7E:
                self._state = _GROUND
                self._csi(ch, "".join(self._params))
            else:
                self._abort(ch)

    def _abort(self, ch: str) -> None:
        """A sequence broken off by a character that cannot continue it."""
        self._state = _GROUND
        if ch in ("\x18", "\x1a"):
            return
        # The lone ESC (or CSI) is dropped; the character itself is processed afresh.
        self.feed_char(ch)

    def feed_char(self, ch: str) -> None:
        """Process one character in the ground state (used after an aborted sequence)."""
        if _PLAIN_RUN.match(ch):
            self._write(ch)
        else:
            self._control(ch)

    def _csi(self, final: str, params: str) -> None:
        if final not in "KCDGP@" or not re.fullmatch(r"[0-9]*", params):
            return  # private or unknown: no effect on plain text
        n = min(int(params), MAX_LINE) if params else 0
        line = self._line
        col = self._col
        if final == "K":
            if n == 0:
                del line[col:]
            elif n == 1:
                line[: col + 1] = " " * min(col + 1, len(line))
            elif n == 2:
                line[:] = " " * len(line)
        elif final == "C":
            self._col = min(MAX_LINE, col + max(n, 1))
        elif final == "D":
            self._col = max(0, col - max(n, 1))
        elif final == "G":
            self._col = min(MAX_LINE, max(n, 1)) - 1
        elif final == "P":
            del line[col : col + max(n, 1)]
        elif col < len(line):  # "@": insert blanks, the line keeps its length cap
            line[col:col] = " " * max(n, 1)
            del line[MAX_LINE:]

    def _string(self, text: str, i: int) -> int:
        """Skip a control string's body; return the index to go on from."""
        if self._state == _STRING_ESC:
            self._state = _GROUND
            if text[i] == "\\":
                return i + 1
            self._state = _ESC  # ESC + something else: the string ends, a sequence starts
            return i
        m = _STRING_STOP.search(text, i)
        if m is None:
            return len(text)
        ch = m.group()
        if ch == "\x1b":
            self._state = _STRING_ESC
        elif ch == "\x07" and not self._string_is_osc:
            return m.end()  # BEL ends only OSC; inside DCS it is part of the body
        else:
            self._state = _GROUND
        return m.end()


def render_text(text: str) -> str:
    """Render a whole piece of output to plain text, one ``\\n`` after every line."""
    renderer = TextRenderer()
    lines = renderer.feed(text) + renderer.finish()
    return "".join(line + "\n" for line in lines)


def render_lines(chunks: Iterable[str]) -> Iterable[str]:
    """Render output given in pieces, yielding finished lines as they come."""
    renderer = TextRenderer()
    for chunk in chunks:
        yield from renderer.feed(chunk)
    yield from renderer.finish()


# Bidirectional-override and invisible formatting characters: shown escaped so that a
# command line cannot read differently from what it is ("Trojan Source").
_INVISIBLE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def visible_controls(text: str) -> str:
    """Show control and bidi characters as ``\\xHH``/``\\uHHHH``; keep tab and newline."""

    def _escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _INVISIBLE.sub(_escape, text)


def commands_to_dicts(commands: Sequence[Command]) -> list[dict[str, str | float | int | None]]:
    """The command list as JSON-able dicts, in the order the commands started."""
    return [
        {
            "command": c.command_line,
            "start": round(c.start, 3),
            "duration": None if c.duration is None else round(c.duration, 3),
            "exit_status": c.exit_status,
        }
        for c in commands
    ]
