"""Refusals counted rather than written one by one (pure bookkeeping; no I/O, no clock).

Each audit event is a serialised, signed database transaction, so a client that is refused
over and over (a bad agent retrying, an anonymous scanner) would otherwise grow the audit
log and cost the broker more than a good request. :class:`RefusalDigest` groups refusals
by a kind into windows and says which to audit at once and which summaries are due; the
callers (``broker/agents/refusal_audit.py`` for agent tunnels, ``broker/audit/anonymous.py``
for unauthenticated requests) write the events. The caller passes monotonic ``now`` and the
wall-clock ``at``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final

#: How long refusals of one kind are counted before their summary is written (agents).
WINDOW_S: Final = 600.0
#: Kinds counted at once; beyond, every refusal is audited on its own (never lost).
MAX_WINDOWS: Final = 10_000

#: What refusals are counted together by (the agents': claimed id, source, reason).
Kind = tuple[str, ...]
#: Distinct labels counted in one window; beyond, they count as "other".
MAX_LABELS: Final = 16


@dataclass(frozen=True, slots=True)
class Summary:
    """The refusals of one kind counted in a window (after its first, with first_alone)."""

    kind: Kind
    repeats: int
    first_at: dt.datetime
    last_at: dt.datetime
    labels: tuple[tuple[str, int], ...] = ()  # (label, count), most counted first


@dataclass(slots=True)
class _Window:
    ends: float
    repeats: int = 0
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None
    labels: Counter[str] = field(default_factory=Counter)

    def count(self, at: dt.datetime, label: str) -> None:
        self.repeats += 1
        self.first_at = self.first_at or at
        self.last_at = at
        if label:
            known = label in self.labels or len(self.labels) < MAX_LABELS
            self.labels[label if known else "other"] += 1


@dataclass
class RefusalDigest:
    """Which refusals to audit one by one and which to count (pure). With ``first_alone``
    the first of a kind in a window is audited on its own and the rest counted; without,
    all are counted (only beyond ``max_windows`` is one audited on its own)."""

    window: float = WINDOW_S
    max_windows: int = MAX_WINDOWS
    first_alone: bool = True
    _windows: dict[Kind, _Window] = field(default_factory=dict)
    _ends: deque[tuple[float, Kind]] = field(default_factory=deque)
    _due: list[Summary] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.window <= 0 or self.max_windows < 0:
            raise ValueError("window must be > 0 and max_windows >= 0")

    def __len__(self) -> int:
        """Windows open now."""
        return len(self._windows)

    def refused(self, kind: Kind, now: float, at: dt.datetime, label: str = "") -> bool:
        """Note a refusal (``label`` says of what sort, for the summary); True when it is
        to be audited on its own now."""
        self._close_until(now)
        open_window = self._windows.get(kind)
        if open_window is not None:
            open_window.count(at, label)
            return False
        if len(self._windows) < self.max_windows:
            ends = now + self.window
            opened = _Window(ends)
            self._windows[kind] = opened
            self._ends.append((ends, kind))
            if not self.first_alone:
                opened.count(at, label)
                return False
        return True

    def take_due(self, now: float) -> list[Summary]:
        """Summaries of the windows ended by ``now`` that counted something."""
        self._close_until(now)
        due, self._due = self._due, []
        return due

    def take_all(self) -> list[Summary]:
        """Close every window (shutdown); the summaries of those that counted something."""
        self._close_until(float("inf"))
        return self.take_due(float("inf"))

    def next_end(self) -> float | None:
        """When to write next: at once when a summary is due already (its kind's window
        closed as that kind came back), else when the next window ends; None: never."""
        if self._due:
            return float("-inf")
        return self._ends[0][0] if self._ends else None

    def _close_until(self, now: float) -> None:
        while self._ends and self._ends[0][0] <= now:
            _, kind = self._ends.popleft()
            closed = self._windows.pop(kind)
            if closed.repeats and closed.first_at and closed.last_at:
                labels = tuple(closed.labels.most_common())
                self._due.append(
                    Summary(kind, closed.repeats, closed.first_at, closed.last_at, labels)
                )
