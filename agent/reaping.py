"""Ending a child process started with asyncio and waiting for it, on every path.

A child that is signalled but not waited for outlives the task that started it: its exit
reaches the event loop later, or never when that loop has closed by then, and the
``subprocess.Popen`` behind it is then finalised as "still running" (a ResourceWarning,
an error under the test suite). ``reap`` is what a ``finally`` calls: it waits for the
exit even when the task is cancelled meanwhile, and raises the cancel afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

#: How long a child asked to stop with SIGTERM may take before it gets SIGKILL.
TERM_GRACE_SECONDS = 5.0


async def reap(proc: asyncio.subprocess.Process, *, term_first: bool = False) -> None:
    """End ``proc`` if it still runs (SIGKILL, or SIGTERM and SIGKILL after the grace
    when ``term_first``) and return once it has exited; a cancel is raised after that."""
    waiting = asyncio.ensure_future(_end(proc, term_first))
    cancelled = False
    # The wait is shielded: a cancel must not leave the child behind, and a killed child
    # exits at once, so this waits a moment at most.
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            cancelled = True
    waiting.result()
    if cancelled:
        raise asyncio.CancelledError


async def _end(proc: asyncio.subprocess.Process, term_first: bool) -> None:
    if proc.returncode is not None:
        return
    if term_first:
        _signal(proc, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TERM_GRACE_SECONDS):
                await proc.wait()
                return
    _signal(proc, signal.SIGKILL)
    await proc.wait()


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    # The child may have exited since returncode was read; its exit is still to be waited.
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
