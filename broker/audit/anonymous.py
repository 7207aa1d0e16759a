"""Refusals of unauthenticated requests, audited as one summary per source and minute.

Anyone can send requests without credentials, and each refusal written as its own signed
audit event let anonymous traffic grow the log (160 anonymous POSTs wrote 93 events). So
they are counted per source address for :data:`WINDOW_S` from the first one, and one
``anonymous.refused`` event then says how many there were, of which kinds, from when to
when (``details``: ``count``, ``kinds`` as ``{"action: reason": n}``, ``first_at``,
``last_at``). Refusals of signed-in callers are not counted here: each stays its own event.

An audit read (:meth:`AnonymousRefusals.flush`) and shutdown write what is counted so far,
so the log never lacks a refusal that happened before it was read or the broker stopped.
Beyond :data:`MAX_SOURCES` sources counted at once, a refusal is written on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Final

from broker.audit.log import AuditLog
from broker.audit.refusals import RefusalDigest, Summary
from broker.audit.summary_writer import SummaryWriter

log = logging.getLogger(__name__)

#: One summary per source per this many seconds.
WINDOW_S: Final = 60.0
MAX_SOURCES: Final = 10_000
ACTION: Final = "anonymous.refused"
_LABEL_MAX: Final = 100


class AnonymousRefusals(SummaryWriter):
    """Counts refusals of unauthenticated requests and writes their summaries."""

    def __init__(
        self, audit: AuditLog, clock: Callable[[], dt.datetime], window: float = WINDOW_S
    ) -> None:
        super().__init__(RefusalDigest(window=window, max_windows=MAX_SOURCES, first_alone=False))
        self._audit = audit
        self._clock = clock
        #: Set after each batch of summaries is written (tests wait on it).
        self.changed = asyncio.Event()

    async def refused(self, *, source: str, action: str, target: str, reason: str) -> None:
        """Account for one refused unauthenticated request."""
        label = f"{action}: {reason}"[:_LABEL_MAX]
        if self._digest.refused((source,), time.monotonic(), self._clock(), label):
            # Too many sources counted at once: this one is written rather than lost.
            await self._audit.record(
                actor="anonymous",
                action=action,
                target=target,
                outcome="denied",
                source=source,
                details={"reason": reason},
            )
            return
        self._arm()

    async def _write(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            (source,) = summary.kind
            try:
                await self._audit.record(
                    actor="anonymous",
                    action=ACTION,
                    outcome="denied",
                    source=source,
                    details={
                        "count": summary.repeats,
                        "kinds": dict(summary.labels),
                        "first_at": summary.first_at.isoformat(),
                        "last_at": summary.last_at.isoformat(),
                    },
                )
            except Exception:  # a task boundary: say so rather than lose it silently
                log.exception(
                    "could not audit %d anonymous refusals from %s", summary.repeats, source
                )
        if summaries:
            self.changed.set()
