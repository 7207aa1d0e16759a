"""Admission of agent tunnel handshakes: a token bucket that hands out places in line.

After a broker restart every agent dials at once. Each SSH handshake costs the broker
real CPU, so upgrades are admitted at ``rate`` per second with a burst of ``burst``
(a token bucket, written as GCRA: ``_tat`` is the time the bucket is full again).
An agent over the limit is not simply told "later": it gets the next free slot,
remembered under its agent id, and an answer "retry in N seconds". When it comes back
at its slot it goes through, whatever arrived meanwhile, so nobody is starved however
large the herd is; newcomers queue behind the slots already handed out.

Pure: the caller passes ``now`` (monotonic seconds) and how many handshakes are in
flight; nothing here awaits or reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

#: Timers fire a little early and Retry-After is rounded: an agent this close to its slot
#: is let in.
EARLY_TOLERANCE_S: Final = 0.25
#: A slot nobody claimed within this long after its time is given up.
SLOT_GRACE_S: Final = 30.0
#: The answer when too many handshakes are in flight: come back soon, keep your slot.
BUSY_RETRY_S: Final = 1.0


@dataclass
class HandshakeLimiter:
    """Admits handshakes at ``rate`` per second (burst ``burst``), fairly.

    ``rate`` 0 turns the limit off. ``max_in_flight`` bounds handshakes under way at once,
    so a slow machine is not buried under more parallel handshakes than it can finish.
    """

    rate: float
    burst: int
    max_in_flight: int = 256
    max_reservations: int = 100_000
    _tat: float = 0.0
    _reserved: dict[str, float] = field(default_factory=dict)
    _expiry: deque[tuple[float, str]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1 or self.max_in_flight < 1:
            raise ValueError("rate must be >= 0, burst and max_in_flight >= 1")

    @property
    def reservations(self) -> int:
        """How many agents hold a slot they have not claimed yet."""
        return len(self._reserved)

    def held_back(self, key: str, now: float, in_flight: int = 0) -> float:
        """The seconds ``key`` must wait whatever else is true of it, else 0.0; changes
        nothing. Its slot not due yet, or too many handshakes under way: the endpoint
        turns it away on this before it looks the agent up. A key without a slot is not
        judged here: a place in line is given only to an agent known to be enrolled, or
        invented agent ids would push every real agent back (:meth:`admit`)."""
        if self.rate == 0:
            return 0.0
        slot = self._reserved.get(key)
        if slot is not None and now + EARLY_TOLERANCE_S < slot:
            return slot - now
        return BUSY_RETRY_S if in_flight >= self.max_in_flight else 0.0

    def admit(self, key: str, now: float, in_flight: int = 0) -> float:
        """Return 0.0 when ``key`` may hand-shake now, else the seconds it must wait."""
        if self.rate == 0:
            return 0.0
        self._expire(now)
        slot = self._reserved.get(key)
        if slot is not None and now + EARLY_TOLERANCE_S < slot:
            return slot - now
        if in_flight >= self.max_in_flight:
            # Its slot (if any) stays: it is not the agent's fault the broker is busy.
            return BUSY_RETRY_S
        if slot is not None:
            del self._reserved[key]
            return 0.0
        interval = 1.0 / self.rate
        tolerance = (self.burst - 1) * interval
        tat = max(self._tat, now)
        earliest = tat - tolerance
        self._tat = tat + interval
        if earliest <= now:
            return 0.0
        if len(self._reserved) >= self.max_reservations:
            # Out of memory for places in line: the slot is consumed unclaimed, and the
            # agent is told when the line will have moved that far.
            return earliest - now
        self._reserved[key] = earliest
        self._expiry.append((earliest, key))
        return earliest - now

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] + SLOT_GRACE_S < now:
            slot, key = expiry.popleft()
            if self._reserved.get(key) == slot:
                del self._reserved[key]
