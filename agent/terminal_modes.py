"""The terminal a client asks for: size and RFC 4254 modes, applied to a PTY (pure)."""

from __future__ import annotations

import struct
import termios
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# Linux value; Python 3.11 does not export it.
_IUTF8: Final[int] = getattr(termios, "IUTF8", 0o40000)
# RFC 4254 section 8 opcodes -> index into termios' control characters.
_CC_MODES: Final = {
    1: termios.VINTR, 2: termios.VQUIT, 3: termios.VERASE, 4: termios.VKILL,
    5: termios.VEOF, 6: termios.VEOL, 7: termios.VEOL2, 8: termios.VSTART,
    9: termios.VSTOP, 10: termios.VSUSP, 12: termios.VREPRINT, 13: termios.VWERASE,
    14: termios.VLNEXT, 18: termios.VDISCARD,
}  # fmt: skip
# opcode -> (index in the tcgetattr list, flag)
_FLAG_MODES: Final = {
    30: (0, termios.IGNPAR), 31: (0, termios.PARMRK), 32: (0, termios.INPCK),
    33: (0, termios.ISTRIP), 34: (0, termios.INLCR), 35: (0, termios.IGNCR),
    36: (0, termios.ICRNL), 38: (0, termios.IXON), 39: (0, termios.IXANY),
    40: (0, termios.IXOFF), 41: (0, termios.IMAXBEL), 42: (0, _IUTF8),
    50: (3, termios.ISIG), 51: (3, termios.ICANON), 53: (3, termios.ECHO),
    54: (3, termios.ECHOE), 55: (3, termios.ECHOK), 56: (3, termios.ECHONL),
    57: (3, termios.NOFLSH), 58: (3, termios.TOSTOP), 59: (3, termios.IEXTEN),
    60: (3, termios.ECHOCTL), 61: (3, termios.ECHOKE), 70: (1, termios.OPOST),
    72: (1, termios.ONLCR), 73: (1, termios.OCRNL), 74: (1, termios.ONOCR),
    75: (1, termios.ONLRET),
}  # fmt: skip
_SSH_VDISABLE: Final = 255

TermAttrs = list[int | list[bytes | int]]


def apply_terminal_modes(attrs: TermAttrs, modes: Mapping[int, int]) -> TermAttrs:
    """Return ``attrs`` (as from ``tcgetattr``) with the client's RFC 4254 modes applied."""
    result: TermAttrs = [*attrs[:6], list(attrs[6])]  # type: ignore[arg-type]
    chars = result[6]
    assert isinstance(chars, list)
    for opcode, value in modes.items():
        if opcode in _CC_MODES:
            chars[_CC_MODES[opcode]] = bytes([0 if value == _SSH_VDISABLE else value & 0xFF])
        elif opcode in _FLAG_MODES:
            index, flag = _FLAG_MODES[opcode]
            current = result[index]
            assert isinstance(current, int)
            result[index] = current | flag if value else current & ~flag
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class PtyRequest:
    """The terminal a client asked for."""

    term: str
    cols: int
    rows: int
    pixel_width: int = 0
    pixel_height: int = 0
    modes: Mapping[int, int] = field(default_factory=dict)

    def winsize(self) -> bytes:
        """The ``struct winsize`` for TIOCSWINSZ, each value clamped to 16 bits."""
        values = (self.rows, self.cols, self.pixel_width, self.pixel_height)
        return struct.pack("HHHH", *(max(0, min(v, 0xFFFF)) for v in values))
