"""Input reports held for a moment, so that each leaves with the echo it announces.

The agent reports every write of staff input to the PTY on the channel's stderr
(:mod:`agent.input_reports`). Sent at once, the report of a typed key left the agent in a
tunnel message of its own, and the key's echo, which the shell or ``cat`` writes a moment
later, in the next one: two messages per keystroke through the agent's TLS and WebSocket
and the broker's, each waking the broker. Held until the session's next output (or at most
:data:`HOLD_S`), the report goes into the channel just before that output, in the same
event-loop turn, and the tunnel sends both as one message
(:class:`agent.tunnel.TunnelTransport` gathers what one turn writes).

Nothing else changes: the reports keep their order, one line per write, and still come
before the output that follows the write (the broker records the typed key before its
echo, as before); input the terminal does not echo (a password) is reported after
:data:`HOLD_S`. The channel's owner sends what is held before it ends the channel
(:meth:`HeldReports.flush`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from agent.input_reports import encode_input_report

#: The longest a report waits for output: a few times what ``cat`` takes to echo a key
#: on a busy two-core machine, and nothing a person or the transcript's clock would see.
HOLD_S: Final = 0.005


class HeldReports:
    """The input reports of one PTY channel not sent yet; ``send`` writes them to stderr."""

    __slots__ = ("_hold", "_lines", "_send", "_timer")

    def __init__(self, send: Callable[[bytes], None], hold: float = HOLD_S) -> None:
        self._send = send
        self._hold = hold
        self._lines = b""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bytes:
        """The report lines waiting to be sent."""
        return self._lines

    def add(self, count: int, echo: bool) -> None:
        """``count`` bytes were written with ``echo``: report them with the next output."""
        self._lines += encode_input_report(count, echo)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._hold, self.flush)

    def flush(self) -> None:
        """Send what is held now (output follows, the hold ran out, or the channel ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines = self._lines, b""
            self._send(lines)

    def drop(self) -> None:
        """The channel is gone: nothing is sent any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lines = b""
