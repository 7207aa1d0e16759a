"""Shell-integration marks in the PTY output stream, sans I/O.

:class:`MarkParser` takes the agent's PTY output in chunks as they come and returns, for
each chunk, the bytes to forward to the staff terminals and the marks it completed::

    forward, marks = parser.feed(chunk)

It understands (see docs/protocol.md, "Shell integration"):

- ``ESC]133;A``/``B``/``C``/``D[;status]`` (and the same under 633): prompt start, input
  start, command start, command end. These stay in ``forward``: terminals expect them.
- ``ESC]633;E;<command line>``: the command line, ``\\\\`` for a backslash and ``\\xHH``
  for other bytes. Stays in ``forward``.

Nothing else is ours: ``ESC]6973;…`` (once an in-band echo marker) is forwarded and recorded
like any other sequence a program prints, and changes nothing. Whether typed input echoed
comes out of band, in the agent's input reports (``agent.input_reports``).

A sequence ends with BEL or ST (``ESC \\``); ``ESC`` followed by anything else, CAN or SUB
abort it (as terminals do) and yield no mark. Sequences may be split at any byte across
chunks: feeding a stream in any chunking gives the same concatenated ``forward`` and the
same marks as feeding it whole. Hostile input is bounded: a mark's payload is capped at
:data:`MAX_PAYLOAD` bytes; past the cap the sequence is forwarded as it is and yields no
mark (a ``633;E`` command line is kept, truncated). Bytes are never dropped;
:meth:`MarkParser.close` returns whatever is still held back at the end of the stream.

:meth:`MarkParser.feed` raises nothing for any bytes. Every mark carries ``offset``: its
position in the forwarded stream (the byte count of ``forward`` up to the end of the mark),
so :class:`CommandTracker` can find the text typed between two marks.

:class:`CommandTracker` (pure) turns marks and times into the list of commands.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Final

from broker.transcript.render import render_text, visible_controls

MAX_PAYLOAD: Final = 16384
MAX_COMMAND_CHARS: Final = 4096
MAX_TYPED_BYTES: Final = 4096
MAX_COMMANDS: Final = 10000
_MAX_NUMBER_DIGITS: Final = 6

_ESC: Final = 0x1B
_OSC_START: Final = b"\x1b]"
_STOPS: Final = re.compile(rb"[\x07\x18\x1a\x1b]")
_STATUS: Final = re.compile(rb"-?[0-9]{1,10}")
_HEX_ESCAPE: Final = re.compile(rb"\\(\\|x[0-9A-Fa-f]{2})")
_PARTIAL_ESCAPE: Final = re.compile(rb"\\(x[0-9A-Fa-f]?)?\Z")


@dataclass(frozen=True, slots=True)
class PromptStart:
    """``133;A``: the shell is about to draw its prompt."""

    _: KW_ONLY
    offset: int


@dataclass(frozen=True, slots=True)
class InputStart:
    """``133;B``: the prompt is drawn; what follows is typed input."""

    _: KW_ONLY
    offset: int


@dataclass(frozen=True, slots=True)
class CommandLine:
    """``633;E``: the command line the shell is about to run, decoded."""

    text: str
    _: KW_ONLY
    offset: int


@dataclass(frozen=True, slots=True)
class CommandStart:
    """``133;C``: the command starts; its output follows."""

    _: KW_ONLY
    offset: int


@dataclass(frozen=True, slots=True)
class CommandEnd:
    """``133;D``: the command ended, with its exit status when the shell gave one."""

    exit_status: int | None
    _: KW_ONLY
    offset: int


Mark = PromptStart | InputStart | CommandLine | CommandStart | CommandEnd

# Parser states.
_GROUND, _ESC_HELD, _OSC_NUMBER, _OSC_BODY, _OSC_BODY_ESC = range(5)
# What an OSC body is: a shell mark (forwarded, payload kept) or anything else (forwarded,
# nothing kept).
_KIND_SHELL, _KIND_OTHER = range(2)


class MarkParser:
    """Find shell-integration marks in PTY output."""

    def __init__(self) -> None:
        self._state = _GROUND
        self._held = bytearray()  # bytes not yet forwarded (ESC, ESC]NNN, ESC of an ST)
        self._number = bytearray()
        self._kind = _KIND_OTHER
        self._payload = bytearray()
        self._overflow = False
        self._forwarded = 0

    def feed(self, data: bytes) -> tuple[bytes, list[Mark]]:
        """Consume one chunk; return the bytes to forward and the marks it completed."""
        # The common case, bulk output without an OSC: forwarded without a copy. ESC alone is
        # looked for first: a one-byte find is memchr, many times faster than the two-byte
        # search, which ran at about 1 GB/s and cost a relayed GB of zeros 2-3 s of CPU.
        if (
            self._state == _GROUND
            and not self._held
            and (data.find(b"\x1b") < 0 or (data.find(_OSC_START) < 0 and data[-1] != 0x1B))
        ):
            self._forwarded += len(data)
            return data, []
        out: list[bytes] = []
        marks: list[Mark] = []
        self._run(data, out, marks)
        forward = b"".join(out)
        return forward, marks

    def close(self) -> bytes:
        """End of stream: return the bytes still held back."""
        held = bytes(self._held)
        self._held.clear()
        self._state = _GROUND
        self._forwarded += len(held)
        return held

    def _emit(self, out: list[bytes], chunk: bytes | bytearray) -> None:
        if chunk:
            out.append(bytes(chunk))
            self._forwarded += len(chunk)

    def _release(self, out: list[bytes]) -> None:
        self._emit(out, self._held)
        self._held.clear()

    def _run(self, data: bytes, out: list[bytes], marks: list[Mark]) -> None:
        i = 0
        n = len(data)
        while i < n:
            state = self._state
            if state == _GROUND:
                j = data.find(_OSC_START, i)
                if j < 0:
                    if data[-1] == _ESC:  # might be the first half of ESC ]
                        self._emit(out, data[i : n - 1])
                        self._held += b"\x1b"
                        self._state = _ESC_HELD
                    else:
                        self._emit(out, data[i:])
                    return
                self._emit(out, data[i:j])
                self._held += _OSC_START
                self._number.clear()
                self._state = _OSC_NUMBER
                i = j + 2
            elif state == _ESC_HELD:
                if data[i] == ord("]"):
                    self._held += b"]"
                    self._number.clear()
                    self._state = _OSC_NUMBER
                    i += 1
                else:  # a lone ESC or another sequence: forward and look again
                    self._release(out)
                    self._state = _GROUND
            elif state == _OSC_NUMBER:
                i = self._osc_number(data, i, out)
            elif state == _OSC_BODY:
                i = self._osc_body(data, i, out, marks)
            else:  # _OSC_BODY_ESC: ESC (held last) seen inside the body, this byte decides
                if data[i] == ord("\\"):
                    self._finish(out, marks, b"\x1b\\")
                    i += 1
                else:  # aborted: the ESC starts a new sequence, re-read it
                    self._emit(out, self._held[:-1])
                    self._held = bytearray(b"\x1b")
                    self._state = _ESC_HELD

    def _osc_number(self, data: bytes, i: int, out: list[bytes]) -> int:
        byte = data[i]
        if 0x30 <= byte <= 0x39 and len(self._number) < _MAX_NUMBER_DIGITS:
            self._number.append(byte)
            self._held.append(byte)
            return i + 1
        number = bytes(self._number) if byte == ord(";") else b""
        self._payload.clear()
        self._overflow = False
        self._kind = _KIND_SHELL if number in (b"133", b"633") else _KIND_OTHER
        self._state = _OSC_BODY
        if byte == ord(";"):
            self._held.append(byte)
            i += 1
        self._release(out)
        return i

    def _osc_body(self, data: bytes, i: int, out: list[bytes], marks: list[Mark]) -> int:
        m = _STOPS.search(data, i)
        end = len(data) if m is None else m.start()
        body = data[i:end]
        if body:
            self._collect(body, out)
        if m is None:
            return end
        stop = data[end]
        if stop == 0x07:
            self._finish(out, marks, b"\x07")
        elif stop == _ESC:
            self._held += b"\x1b"  # kept until the next byte says ST or a new sequence
            self._state = _OSC_BODY_ESC
        else:  # CAN or SUB: the terminal aborts the sequence and shows/ignores the byte
            self._abort(out)
            self._emit(out, data[end : end + 1])
        return end + 1

    def _collect(self, body: bytes, out: list[bytes]) -> None:
        if self._kind == _KIND_OTHER:
            self._emit(out, body)
            return
        room = MAX_PAYLOAD - len(self._payload)
        if len(body) > room:
            self._overflow = True
            self._payload += body[: max(room, 0)]
        else:
            self._payload += body
        self._emit(out, body)

    def _abort(self, out: list[bytes]) -> None:
        self._release(out)
        self._state = _GROUND

    def _finish(self, out: list[bytes], marks: list[Mark], terminator: bytes) -> None:
        self._state = _GROUND
        self._held.clear()  # the ESC of the ST, sent with the terminator
        self._emit(out, terminator)
        if self._kind != _KIND_SHELL:
            return
        mark = _shell_mark(bytes(self._payload), self._overflow, self._forwarded)
        if mark is not None:
            marks.append(mark)


def _shell_mark(payload: bytes, overflow: bool, offset: int) -> Mark | None:
    letter, _, rest = payload.partition(b";")
    if letter == b"E":
        line = rest.partition(b";")[0]  # a further field is VS Code's nonce
        return CommandLine(decode_command_line(line, truncated=overflow), offset=offset)
    if overflow:
        return None
    if letter == b"A":
        return PromptStart(offset=offset)
    if letter == b"B":
        return InputStart(offset=offset)
    if letter == b"C":
        return CommandStart(offset=offset)
    if letter == b"D":
        status = rest.partition(b";")[0]
        if _STATUS.fullmatch(status) and -(2**31) <= int(status) < 2**31:
            return CommandEnd(int(status), offset=offset)
        return CommandEnd(None, offset=offset)
    return None


def _unescape(m: re.Match[bytes]) -> bytes:
    escape = m.group(1)
    return b"\\" if escape == b"\\" else bytes.fromhex(escape[1:].decode("ascii"))


def decode_command_line(escaped: bytes, *, truncated: bool = False) -> str:
    """Undo the agent's escaping (``\\\\``, ``\\xHH``); invalid UTF-8 becomes U+FFFD."""
    if truncated:
        # A cut may split an escape: drop a partial "\x4" or a lone trailing backslash.
        escaped = _PARTIAL_ESCAPE.sub(b"", escaped)
    raw = _HEX_ESCAPE.sub(_unescape, escaped)
    text = raw.decode("utf-8", errors="replace")
    if truncated or len(text) > MAX_COMMAND_CHARS:
        text = text[:MAX_COMMAND_CHARS] + "…"
    return text


@dataclass(frozen=True, slots=True)
class Command:
    """One command run in the session.

    ``start`` is seconds since the session started (the ``.cast`` time), ``duration`` seconds
    until its end mark (or until the session ended, then ``exit_status`` is ``None``).
    """

    command_line: str
    start: float
    duration: float | None
    exit_status: int | None


class CommandTracker:
    """Turn marks and times into commands; pure: the caller passes ``now``.

    Feed it the same ``forward`` bytes and marks the parser returned, in order::

        tracker.observe(forward, marks, now)

    The command line is the shell's ``633;E`` text; when none came, the output drawn between
    ``133;B`` and ``133;C`` (what was typed, as echoed), rendered without escapes.
    """

    def __init__(self, started_at: float, *, max_commands: int = MAX_COMMANDS) -> None:
        self._started_at = started_at
        self._max = max_commands
        self._base = 0  # stream offset of the next forward byte
        self._typed: bytearray | None = None
        self._line: str | None = None
        self._running: tuple[str, float] | None = None
        self._commands: list[Command] = []
        self.dropped = 0

    @property
    def commands(self) -> tuple[Command, ...]:
        """The commands finished so far."""
        return tuple(self._commands)

    def observe(self, forward: bytes, marks: Sequence[Mark], now: float) -> None:
        """Record one parser result seen at ``now`` (seconds, the caller's clock)."""
        at = round(max(0.0, now - self._started_at), 6)
        end = self._base + len(forward)
        pos = self._base
        for mark in marks:
            offset = min(max(mark.offset, pos), end)
            self._capture(forward, pos, offset)
            pos = offset
            self._on_mark(mark, at)
        self._capture(forward, pos, end)
        self._base = end

    def finish(self, now: float) -> tuple[Command, ...]:
        """The session ended: close a command still running; return every command."""
        if self._running is not None:
            self._close(round(max(0.0, now - self._started_at), 6), None)
        return self.commands

    def _capture(self, forward: bytes, start: int, stop: int) -> None:
        typed = self._typed
        if typed is not None and stop > start and len(typed) < MAX_TYPED_BYTES:
            piece = forward[start - self._base : stop - self._base]
            typed += piece[: MAX_TYPED_BYTES - len(typed)]

    def _on_mark(self, mark: Mark, at: float) -> None:
        if isinstance(mark, PromptStart):
            if self._running is not None:
                self._close(at, None)  # a new prompt without an end mark: status unknown
            self._typed = None
            self._line = None
        elif isinstance(mark, InputStart):
            self._typed = bytearray()
            self._line = None
        elif isinstance(mark, CommandLine):
            self._line = mark.text
        elif isinstance(mark, CommandStart):
            if self._running is not None:
                self._close(at, None)
            self._running = (self._command_text(), at)
            self._typed = None
            self._line = None
        elif isinstance(mark, CommandEnd) and self._running is not None:
            # An end without a start is the shell's report for an empty command line: ignored.
            self._close(at, mark.exit_status)

    def _command_text(self) -> str:
        if self._line is not None:
            return visible_controls(self._line)
        if self._typed is None:
            return ""
        typed = bytes(self._typed).decode("utf-8", errors="replace")
        return visible_controls(render_text(typed).strip())

    def _close(self, at: float, exit_status: int | None) -> None:
        assert self._running is not None
        line, start = self._running
        self._running = None
        if len(self._commands) >= self._max:
            self.dropped += 1
            return
        self._commands.append(Command(line, start, round(max(0.0, at - start), 6), exit_status))
