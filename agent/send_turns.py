"""Turns to send output into one tunnel: a bounded queue, channels in turn, small first.

Every channel of an agent shares one SSH connection, and every byte it writes waits in
the tunnel's send queue (:class:`agent.tunnel.TunnelTransport`) behind the bytes written
before it. asyncssh ignores the transport's ``pause_writing``, so without this the queue
grew to the sum of all channel windows (2 MiB each by asyncssh's default): with 50
sessions streaming, a typed key's echo waited behind ~100 MB.

The rule, applied by each channel's writer (``agent.ssh_server.AgentSession``):

- a channel reads at most :data:`QUANTUM` bytes of its process's output at a time and
  writes them at once; a small write (a key's echo, a prompt) therefore never waits for
  a turn, only behind what the queue holds;
- after a write that leaves the queue at or above ``high``, the channel stops reading
  and waits in line (:meth:`SendTurns.wait`);
- each time the queue drains to ``low`` or below, waiting channels are let go in the
  order they came (:meth:`SendTurns.level`), as many as a quantum each fits under
  ``high``; a channel let go reads one more quantum and, if the queue is full again,
  goes to the back of the line.

So the queue never holds more than ``high`` plus three quanta per channel (one written
after it filled, two from the channel's SSH write buffer; :meth:`SendTurns.bound`), a
streaming channel slows only itself, and a keystroke's echo waits behind at most that,
not behind everyone's backlog. Pure bookkeeping: the callbacks it makes
(:meth:`Turn.turn_granted`) do the I/O.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Final, Protocol

#: Most output bytes a channel reads and writes in one go (one SSH packet's data).
QUANTUM: Final = 32 * 1024
#: The tunnel's send queue is full at this many bytes: eight quanta, a few milliseconds
#: of sending on a LAN, so an echo never waits long behind it.
SEND_HIGH: Final = 256 * 1024
#: Waiting channels are let go once the queue drained to this.
SEND_LOW: Final = 128 * 1024


class Turn(Protocol):
    """A channel that can be told it may read and send again."""

    def turn_granted(self) -> None:
        """Read and send again (one quantum, then it asks the queue again)."""


class SendTurns:
    """The send queue's level and the channels waiting for it to drain."""

    def __init__(
        self, *, high: int = SEND_HIGH, low: int = SEND_LOW, quantum: int = QUANTUM
    ) -> None:
        if not 0 <= low <= high or quantum <= 0:
            raise ValueError("send turns need 0 <= low <= high and a positive quantum")
        self.high = high
        self.low = low
        self.quantum = quantum
        self._queued = 0
        self._waiting: deque[Turn] = deque()
        #: The highest level the queue reached (tests assert it stays under the bound).
        self.peak = 0

    @property
    def queued(self) -> int:
        """Bytes in the send queue now."""
        return self._queued

    def full(self) -> bool:
        """Whether a channel that just wrote must wait for its next turn."""
        return self._queued >= self.high

    def bound(self, channels: int) -> int:
        """The most the queue can hold with ``channels`` channels sending: ``high``, and
        per channel the quantum it wrote after the queue filled plus what its SSH write
        buffer (at most two quanta) releases when its window opens."""
        return self.high + channels * 3 * self.quantum

    def waiting(self) -> int:
        """How many channels wait for a turn."""
        return len(self._waiting)

    def wait(self, who: Turn) -> None:
        """``who`` stopped reading; it is let go when its turn comes."""
        if who not in self._waiting:
            self._waiting.append(who)

    def forget(self, who: Turn) -> None:
        """``who`` is gone (its channel closed): it waits no more."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(who)

    def level(self, queued: int) -> None:
        """The queue holds ``queued`` bytes now; at or under ``low``, let channels go."""
        self._queued = queued
        if queued > self.peak:
            self.peak = queued
        if queued <= self.low and self._waiting:
            room = self.high - queued
            while self._waiting and room > 0:
                who = self._waiting.popleft()
                room -= self.quantum
                who.turn_granted()
