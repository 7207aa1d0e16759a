"""Answer-back in an SSH client's input stream, sans I/O.

A terminal answers some queries in the output (cursor position, device attributes, modes,
DECRQSS, colours, window size) by sending bytes back as if typed. The console terminal says
which bytes are answers (``{"type": "reply"}``); an OpenSSH client cannot, its terminal's
answers arrive among the keystrokes. :class:`AnswerBack` tells them apart the way a person
reading the session would: it counts the queries the output asked, and input that *starts*
with a well-formed answer while a query is open is taken as that answer (one per query)::

    answers.asked(output_chunk)                 # every chunk that goes to the terminals
    replies, typed = answers.split(input_chunk)  # before the input is recorded

A key that sends an answer-shaped sequence right after a query (Ctrl+F3 is ``ESC[1;5R``,
a cursor position report's shape) is taken as an answer; it still reaches the shell, only
its label in the transcript differs. Only queries that end an output chunk count (a program
that asks waits for the answer); at most :data:`MAX_OPEN` stay open.
"""

from __future__ import annotations

import re
from typing import Final

MAX_OPEN: Final = 16
WINDOW: Final = 64

# Queries a terminal answers: DSR/CPR (CSI n), DA1/DA2/DA3 (CSI c), DECRQM (CSI $ p), window
# reports (CSI 11/13/14/18/19/21 t), XTVERSION (CSI > q), DECRQSS (DCS $ q), colour queries
# (OSC 4/10-19 with "?").
_QUERY: Final = re.compile(
    rb"\x1b(?:\[(?:[?>=]?[0-9;]{0,16}[nc]|\??[0-9;]{0,16}\$p|(?:1[13489]|21)(?:;[0-9]{0,5})?t"
    rb"|>0?q)"
    rb"|P\$q[\x20-\x7e]{0,32}\x1b\\"
    rb"|\](?:4;[0-9]{1,3}|1[0-9]);\?(?:\x07|\x1b\\))"
)
# One answer: CPR/DSR/DA (CSI ... R|n|c), DECRPM (CSI ... $ y), window reports (CSI ... t),
# DECRQSS/XTVERSION (DCS ... ST), colour reports (OSC ...;rgb:... BEL|ST).
_ANSWER: Final = re.compile(
    rb"\x1b\[(?:[?>]?[0-9;]{0,32}[Rnc]|\??[0-9;]{0,32}\$y|[0-9;]{0,32}t)"
    rb"|\x1bP(?:[01]\$r|>\|)[\x20-\x7e]{0,256}\x1b\\"
    rb"|\x1b\][0-9;]{1,8};rgb:[0-9a-fA-F/]{1,32}(?:\x07|\x1b\\)"
)


class AnswerBack:
    """Open queries of one session's output, and the answers at the head of its input."""

    def __init__(self) -> None:
        self._open = 0
        self._tail = b""  # the stream's last WINDOW bytes, already counted

    @property
    def open(self) -> int:
        """Queries asked and not answered yet."""
        return self._open

    def asked(self, output: bytes) -> None:
        """Count the queries completed at the end of ``output`` (the terminals' bytes, in
        order). A program that asks waits for the answer, so its query ends the output it
        wrote: only the last :data:`WINDOW` bytes of the stream are looked at, which keeps
        this off the cost of the relay; a query followed by more output is not counted."""
        if len(output) >= WINDOW:
            window, seen = output[-WINDOW:], 0
        else:
            window = self._tail + output
            seen = len(self._tail)
        if b"\x1b" in window:
            asked = sum(1 for query in _QUERY.finditer(window) if query.end() > seen)
            self._open = min(self._open + asked, MAX_OPEN)
        self._tail = window[-WINDOW:]

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """The answers at the head of ``data`` (one per open query), and the rest."""
        at = 0
        while self._open > 0:
            found = _ANSWER.match(data, at)
            if found is None:
                break
            at = found.end()
            self._open -= 1
        return data[:at], data[at:]
