"""How long an agent turned away for the share is told to wait: longer as the herd grows.

A node at its fair share (broker.cluster.share) turns agents away with a ``Retry-After``
chosen at random, so that the herd it turns away comes back spread. A fixed window (1 to
3 s) spreads a few dozen agents; after a cluster restart a node turns away hundreds a
second, and those came back as a herd again, each costing a TLS handshake wherever the
load balancer sent it. So the window grows with the herd: the agents this node turned
away in the last whole second (or in this one, if more), at :data:`SPREAD_PER_S` a second
of window, never shorter than :data:`LEAST_WINDOW_S` nor longer than :data:`MOST_WINDOW_S`.
The agent adds up to half again (agent.runner.busy_delay).

Pure: the caller passes the monotonic time and a random number in [0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The fewest seconds an agent is told to wait.
FIRST_S: Final = 1
#: The window of a small herd: 1 to 3 s, as before the window grew with the herd.
LEAST_WINDOW_S: Final = 3
#: The longest window: an agent is never told to wait longer than this.
MOST_WINDOW_S: Final = 30
#: Agents turned away per second that add one second to the window: about the agents a
#: node's TLS and SSH handshakes get through in a second on one core.
SPREAD_PER_S: Final = 50


@dataclass
class RetrySpread:
    """Counts the agents turned away a second and picks each one's ``Retry-After``."""

    per_second: int = SPREAD_PER_S
    _second: int = -1
    _count: int = 0
    _last: int = 0

    def window(self) -> int:
        """The longest wait a refusal now tells (seconds)."""
        herd = max(self._count, self._last)
        return min(MOST_WINDOW_S, max(LEAST_WINDOW_S, -(-herd // self.per_second)))

    def seconds(self, now: float, rand: float) -> int:
        """Count one more agent turned away at ``now``; its wait, from FIRST_S to the
        window, uniform (``rand`` in [0, 1))."""
        second = int(now)
        if second != self._second:
            # The last whole second's herd, or none if that second turned nobody away.
            self._last = self._count if second == self._second + 1 else 0
            self._second, self._count = second, 0
        self._count += 1
        window = self.window()
        return FIRST_S + min(window - FIRST_S, int(rand * (window - FIRST_S + 1)))
