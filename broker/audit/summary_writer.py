"""The I/O half of counted refusals: writes each window's summary when the window ends.

:class:`~broker.audit.refusals.RefusalDigest` is the pure bookkeeping; this base class keeps
one timer for all open windows, writes the summaries that are due, and at shutdown waits for
writes under way and writes what is still counted. Subclasses say how a summary becomes an
audit event (:meth:`SummaryWriter._write`): agent tunnels and anonymous requests differ only
there.
"""

from __future__ import annotations

import abc
import asyncio
import time

from broker.audit.refusals import RefusalDigest, Summary
from broker.supervision import Supervisor


class SummaryWriter(abc.ABC):
    """Writes the summaries of a :class:`RefusalDigest` when their windows end."""

    def __init__(self, digest: RefusalDigest) -> None:
        self._digest = digest
        self._timer: asyncio.TimerHandle | None = None
        # Due summaries are written by spawned tasks; close() waits for them.
        self._tasks = Supervisor(f"{type(self).__name__} summaries")
        self._closed = False
        # A flush (audit read, shutdown) and a due window never write the same summary twice.
        self._lock = asyncio.Lock()

    @abc.abstractmethod
    async def _write(self, summaries: list[Summary]) -> None:
        """Write ``summaries`` as audit events; a failure is logged, never raised."""

    async def flush(self) -> None:
        """Write every summary counted so far."""
        async with self._lock:
            await self._write(self._digest.take_all())

    async def close(self) -> None:
        """Write the counts of every open window (shutdown). Counting goes on after it, and
        another close writes what was counted since."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._tasks.stop()
        await self.flush()

    def _arm(self) -> None:
        """Come back when the next window ends (one timer for all of them)."""
        ends = self._digest.next_end()
        if ends is None or self._timer is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, ends - time.monotonic())
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._tasks.spawn("writing due summaries", self._write_due())

    async def _write_due(self) -> None:
        try:
            async with self._lock:
                await self._write(self._digest.take_due(time.monotonic()))
        finally:
            self._arm()
