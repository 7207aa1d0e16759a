"""The tests' child processes, ended and waited for on every path.

A child a test leaves unwaited (a bound that expired, an assertion, a cancel) outlives the
test's event loop; its ``subprocess.Popen`` is then finalised as "still running", a
ResourceWarning that the suite's warnings-as-errors turns into an error of whichever later
test on the same worker the garbage collector happens to run in. These helpers put the
kill and the wait in a ``finally``, so the failure is reported by the test that had it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from agent.reaping import reap

WAIT = 30.0  # failure bound, never a pause


async def communicate(
    proc: asyncio.subprocess.Process, bound: float = WAIT, input: bytes | None = None
) -> tuple[bytes, bytes]:
    """``proc.communicate(input)`` within ``bound`` seconds; on a timeout, a failure or a
    cancel the process is killed and waited for before the error goes on."""
    try:
        async with asyncio.timeout(bound):
            return await proc.communicate(input)
    finally:
        await reap(proc)


async def stop_process(
    proc: asyncio.subprocess.Process, sig: int | None = signal.SIGTERM, bound: float = WAIT
) -> int:
    """Send ``sig`` to ``proc`` if it still runs (None: it was asked to end otherwise, by
    closing its input) and return its exit status; past ``bound`` seconds it is killed and
    waited for, and the TimeoutError goes on."""
    if sig is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        async with asyncio.timeout(bound):
            return await proc.wait()
    finally:
        await reap(proc)
