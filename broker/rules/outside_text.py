"""The one rule for free text that comes from outside: API bodies, CLI arguments, console
forms, an agent's facts and messages. Names and ids have their strict parsers in ``names``;
this is for titles, descriptions, notes, reasons, labels and the like.

Where text enters it is cleaned, not refused (refusing a note over an invisible character
loses the note): :func:`clean_line` for one-line fields, :func:`clean_lines` for multi-line
ones. Both remove :data:`UNWANTED`: C0 controls (a one-line field turns line breaks and tabs
into a space, a multi-line field keeps tab and line feed), DEL, C1 controls (U+0080-U+009F:
U+009B is CSI and U+009D OSC to a terminal), bidi embeddings, overrides, isolates and marks,
invisible characters that make two texts look the same, tag characters (U+E0000-U+E007F,
invisible ASCII), and lone surrogates, which cannot be encoded as UTF-8.

Text stored before the rule held may still hold them, so whatever writes to a terminal shows
them escaped with :func:`escape_controls` (U+009B as ``\\u009b``, valid in JSON too).
"""

from __future__ import annotations

import re
from typing import Final

# Removed from every field: see the module's docstring.
UNWANTED: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff\U000e0000-\U000e007f]"
)
# Line and paragraph breaks (and tabs) become one space in a one-line field, so that
# "Debian\nGNU/Linux" stays two words.
_BREAKS: Final = re.compile("[\t\n\v\f\r\x85\u2028\u2029]+")
_LINE_ENDS: Final = re.compile("\r\n?|[\u2028\u2029\x85]")


def clean_line(text: str, max_len: int | None = None) -> str:
    """``text`` on one line without :data:`UNWANTED`, trimmed, cut to ``max_len`` if given.

    Never raises; callers that must not cut check the length themselves first.
    """
    cleaned = UNWANTED.sub("", _BREAKS.sub(" ", text)).strip()
    if max_len is None:
        return cleaned
    return cleaned[: max(max_len, 0)].rstrip()


def clean_lines(text: str) -> str:
    """Multi-line ``text`` with ``\\n`` line ends, without :data:`UNWANTED` but tab and line
    feed, trimmed."""
    return UNWANTED.sub("", _LINE_ENDS.sub("\n", text)).strip()


def _escaped(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:  # as a UTF-16 surrogate pair, which JSON also reads
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def escape_controls(text: str, *, keep_breaks: bool = False) -> str:
    """``text`` safe to write to a terminal: every character that is not printable (C0, DEL,
    C1, bidi and other format characters, separators, surrogates, unassigned) is shown as
    ``\\uHHHH``, which is also how JSON escapes it, so JSON text stays JSON. Nothing is hidden
    or dropped. ``keep_breaks`` lets line feed and tab through (for whole documents; a table
    cell must have neither)."""
    if text.isprintable():
        return text
    kept = "\n\t" if keep_breaks else ""
    return "".join(c if c.isprintable() or c in kept else _escaped(c) for c in text)
