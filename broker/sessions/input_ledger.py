"""Staff input sent to the agent and not yet reported back, sans I/O.

The broker records input only once the agent has reported, out of band, that it wrote
those bytes to the terminal and whether the terminal echoed them (``agent.input_reports``).
Until then the bytes wait here, in the order they were sent, with what they were: typed by
staff (``typed``) or the staff terminal's answer-back to a query (``reply``)::

    ledger.sent("typed", data)                  # just before the channel write
    for kind, data, echoed in ledger.reported(count, echo):
        ...                                     # record (or hide) exactly these bytes

A report's byte count need not match the chunks that were sent (the agent writes what the
terminal takes); pieces are cut accordingly. Bounded: past :data:`MAX_UNREPORTED` bytes
(an agent that never reports) the oldest bytes are given up as not echoed, so a secret is
never recorded for want of a report.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal

InputKind = Literal["typed", "reply"]

MAX_UNREPORTED: Final = 8 << 20


class InputLedger:
    """Input on its way to the agent's terminal, waiting for the agent's report."""

    def __init__(self, max_unreported: int = MAX_UNREPORTED) -> None:
        self._max = max_unreported
        self._pieces: deque[tuple[InputKind, bytes]] = deque()
        self._size = 0
        self._head = 0  # bytes of the first piece already reported
        self.excess = 0  # bytes reported that were never sent (a confused agent)

    @property
    def unreported(self) -> int:
        """Bytes sent and not reported yet."""
        return self._size

    def sent(self, kind: InputKind, data: bytes) -> list[tuple[InputKind, bytes, bool]]:
        """Note ``data`` as sent; returns what the bound gives up (to record as hidden)."""
        if not data:
            return []
        self._pieces.append((kind, data))
        self._size += len(data)
        if self._size <= self._max:
            return []
        return [(k, d, False) for k, d, _ in self._take(self._size - self._max, False)]

    def reported(self, count: int, echo: bool) -> list[tuple[InputKind, bytes, bool]]:
        """The agent wrote the next ``count`` bytes with ``echo``: those bytes, by kind."""
        taken = self._take(count, echo)
        self.excess += max(0, count - sum(len(d) for _, d, _ in taken))
        return taken

    def close(self) -> list[tuple[InputKind, bytes, bool]]:
        """The session ended: whatever was never reported counts as not echoed."""
        return self._take(self._size, False)

    def _take(self, count: int, echo: bool) -> list[tuple[InputKind, bytes, bool]]:
        out: list[tuple[InputKind, bytes, bool]] = []
        while count > 0 and self._pieces:
            kind, data = self._pieces[0]
            left = len(data) - self._head
            n = min(left, count)
            out.append((kind, data[self._head : self._head + n], echo))
            count -= n
            self._size -= n
            if n == left:
                self._pieces.popleft()
                self._head = 0
            else:
                self._head += n
        return out
