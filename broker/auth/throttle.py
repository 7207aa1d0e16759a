"""Failed-attempt throttling per key (account, source address, SSH key), pure: the caller
passes ``now`` (monotonic seconds)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Throttle:
    """Allows ``limit`` failures per ``window`` seconds for each key, then refuses until the
    oldest failure leaves the window. Successes do not reset the count: an attacker who owns
    one account must not be able to clear the counter of a source."""

    limit: int
    window: float
    max_keys: int = 100_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        q = self._trim(key, now)
        if len(q) < self.limit:
            return 0.0
        return max(0.0, q[0] + self.window - now)

    def failed(self, key: str, now: float) -> None:
        self._trim(key, now)
        if key not in self._failures and len(self._failures) >= self.max_keys:
            # Bound memory under a flood of distinct keys: forget the oldest entry.
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(key, deque()).append(now)
