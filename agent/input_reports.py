"""Input reports: the agent tells the broker, out of band, whether input was echoed.

On a PTY channel the agent reads the terminal's ECHO flag at the moment it writes each
piece of staff input to the PTY, and reports ``(count, echo)`` on the channel's **stderr**
stream (docs/protocol.md, "Input reports")::

    sl:input <count> on\\n       <count> bytes were written while the terminal echoed
    sl:input <count> off\\n      <count> bytes were written while it did not (a secret)

A PTY merges the session's stdout and stderr into the channel's stdout, so nothing a
program on the machine prints can reach the stderr stream of a PTY channel: only the agent
writes there. The broker records input from these reports alone, never from the output.

:class:`InputReportReader` (sans I/O, for the broker) splits that stream into reports and
other bytes (an agent's own error message, such as a shell that cannot start); it never
raises, and a line that is not a report is handed back whole or, past
:data:`MAX_REPORT_LINE` bytes without a newline, as it came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_REPORT_LINE: Final = 64
#: Largest count one report carries (a longer write is reported in pieces).
MAX_REPORT_COUNT: Final = 1 << 30

_REPORT_RE: Final = re.compile(rb"sl:input ([1-9][0-9]{0,9}) (on|off)")


@dataclass(frozen=True, slots=True)
class InputReport:
    """``count`` bytes of input reached the terminal, ``echo`` telling whether it echoed."""

    count: int
    echo: bool


def encode_input_report(count: int, echo: bool) -> bytes:
    """The report lines for ``count`` bytes written with ``echo`` (none for 0 bytes)."""
    lines = []
    while count > 0:
        piece = min(count, MAX_REPORT_COUNT)
        lines.append(b"sl:input %d %s\n" % (piece, b"on" if echo else b"off"))
        count -= piece
    return b"".join(lines)


class InputReportReader:
    """Split a PTY channel's stderr stream into input reports and other bytes."""

    def __init__(self) -> None:
        self._line = bytearray()

    def feed(self, data: bytes) -> tuple[list[InputReport], bytes]:
        """Consume a chunk; return the reports completed in it and the bytes that are not
        reports (to be shown as the agent's own stderr), in stream order per kind."""
        if self._line:
            data = bytes(self._line) + data
            self._line.clear()
        *lines, rest = data.split(b"\n")
        reports: list[InputReport] = []
        other = bytearray()
        for line in lines:
            found = _REPORT_RE.fullmatch(line)
            if found is not None and int(found.group(1)) <= MAX_REPORT_COUNT:
                reports.append(InputReport(int(found.group(1)), found.group(2) == b"on"))
            else:
                other += line + b"\n"
        if len(rest) > MAX_REPORT_LINE:
            other += rest  # too long to be a report: hand it on as it came
        else:
            self._line += rest
        return reports, bytes(other)

    def close(self) -> bytes:
        """End of stream: the bytes of an unfinished line (never a report)."""
        rest = bytes(self._line)
        self._line.clear()
        return rest
