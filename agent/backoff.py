"""Reconnect delays: exponential backoff with full jitter (pure; the caller passes randomness).

``delay = rand * min(cap, base * 2**attempt)`` with ``rand`` uniform in [0, 1): after a
broker restart, thousands of agents spread over the whole window instead of arriving
together. A connection that stayed up for ``stable_after`` seconds resets the schedule.
A refusal (the agent was revoked) jumps to the cap: retrying faster would only load the
broker, but the agent keeps trying so that a re-admitted agent comes back by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

BASE_SECONDS: Final = 1.0
CAP_SECONDS: Final = 60.0
STABLE_AFTER_SECONDS: Final = 60.0
_MAX_EXPONENT: Final = 30


@dataclass(slots=True)
class Backoff:
    """The reconnect schedule of one agent."""

    base: float = BASE_SECONDS
    cap: float = CAP_SECONDS
    stable_after: float = STABLE_AFTER_SECONDS
    attempt: int = 0

    def window(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, math.ldexp(self.base, min(self.attempt, _MAX_EXPONENT)))

    def failed(self, rand: float) -> float:
        """A connection attempt failed: the delay before the next one."""
        delay = rand * self.window()
        self.attempt += 1
        return delay

    def disconnected(self, lasted: float, rand: float) -> float:
        """An established connection ended after ``lasted`` seconds: the delay to wait."""
        if lasted >= self.stable_after:
            self.attempt = 0
        return self.failed(rand)

    def refused(self, rand: float) -> float:
        """The broker refused the agent: wait between half the cap and the cap."""
        while self.window() < self.cap:
            self.attempt += 1
        return self.cap / 2 + rand * self.cap / 2
