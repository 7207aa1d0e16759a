"""The bench's long-lived children (bench/child_process.py) end with their stop, on every
path: asked, past the grace, and when the stop itself is cancelled."""

from __future__ import annotations

import asyncio
import signal

from bench.child_process import ManagedProcess

WAIT = 30.0  # failure bound, never a pause

# A child that ignores SIGTERM, and says so once it does (a signal before the trap is set
# would end it).
STUBBORN = ["sh", "-c", "trap '' TERM; echo ignoring; exec tail -f /dev/null"]


async def stubborn() -> ManagedProcess:
    child = await ManagedProcess.start("stubborn", STUBBORN)
    await child.wait_for_line("ignoring", WAIT)
    return child


async def test_stop_ends_a_child_that_ends_at_sigterm() -> None:
    child = await ManagedProcess.start("polite", ["tail", "-f", "/dev/null"])
    async with asyncio.timeout(WAIT):
        await child.stop(grace=WAIT)
    assert child.returncode == -signal.SIGTERM


async def test_stop_kills_a_child_that_ignores_sigterm_past_the_grace() -> None:
    child = await stubborn()
    async with asyncio.timeout(WAIT):
        await child.stop(grace=0)
    assert child.returncode == -signal.SIGKILL


async def test_a_cancelled_stop_kills_and_reaps_the_child_before_the_cancel_goes_on() -> None:
    """Cancelled while it waits out the grace, the stop kills the child and waits for it:
    the child's exit status is known when the cancel arrives."""
    child = await stubborn()
    stopping = asyncio.create_task(child.stop(grace=WAIT))
    await asyncio.sleep(0)  # one loop turn: the stop sent SIGTERM and waits for the exit
    assert child.returncode is None
    stopping.cancel()
    async with asyncio.timeout(WAIT):
        await asyncio.wait([stopping])
    assert stopping.cancelled()
    assert child.returncode == -signal.SIGKILL
