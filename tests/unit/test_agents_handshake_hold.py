"""Upgrades waiting on their connection for a handshake turn that comes soon."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import pytest

from broker.agents.handshake_hold import HandshakeHold
from tests.component.test_sessions_fairness import on_a_loop_turn

#: A failure bound for waits that a wake ends (never a pause): far below LONG.
WAIT: Final = 30.0
#: A wait no test sits out: a waiter still waiting after WAIT was not woken.
LONG: Final = 3600.0


async def _until_held(hold: HandshakeHold, count: int) -> None:
    """Let the event loop run until ``count`` upgrades wait."""
    async with asyncio.timeout(WAIT):
        await on_a_loop_turn(lambda: hold.held >= count)


async def _two_waiting(
    *, second_again: bool = False
) -> tuple[HandshakeHold, asyncio.Task[bool], asyncio.Task[bool]]:
    """A hold and two upgrades in it waiting for a handshake to finish, the first since
    before the second (``second_again``: the second waited before, and its place was taken)."""
    hold = HandshakeHold(max_wait=LONG, max_held=10, max_crowded_wait=2 * LONG)
    arrived = time.monotonic()
    first = asyncio.create_task(hold.wait(LONG, arrived, crowded=True, again=False))
    await _until_held(hold, 1)
    second = asyncio.create_task(hold.wait(LONG, arrived, crowded=True, again=second_again))
    await _until_held(hold, 2)
    return hold, first, second


async def _wakes(hold: HandshakeHold, waiter: asyncio.Task[bool]) -> None:
    """A handshake finishes, and that wakes ``waiter`` to check again."""
    hold.handshake_finished()
    async with asyncio.timeout(WAIT):
        assert await waiter


def test_the_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_wait"):
        HandshakeHold(-1.0, 10)
    with pytest.raises(ValueError, match="max_wait"):
        HandshakeHold(1.0, -1)
    with pytest.raises(ValueError, match="max_wait"):
        HandshakeHold(1.0, 10, -1.0)


async def test_a_turn_past_its_bound_or_a_full_hold_is_not_waited_for() -> None:
    """Past a bound the answer is at once: the caller sends its 503 as before. A place in
    line is waited for up to max_wait after arrival, handshakes under way longer."""
    hold = HandshakeHold(max_wait=2.0, max_held=1, max_crowded_wait=2 * LONG)
    arrived = time.monotonic()
    assert not await hold.wait(LONG, arrived, crowded=False, again=False)
    assert not await hold.wait(0.0, arrived, crowded=False, again=False)
    assert not await hold.wait(1.5, arrived - 1.0, crowded=False, again=False)
    first = asyncio.create_task(hold.wait(LONG, arrived, crowded=True, again=False))
    await _until_held(hold, 1)
    assert not await hold.wait(0.5, arrived, crowded=True, again=False), "one waits already"
    await _wakes(hold, first)
    assert hold.held == 0


async def test_a_finished_handshake_wakes_the_oldest_waiter_only() -> None:
    """One free place wakes one waiter, the one that waited longest."""
    hold, older, newer = await _two_waiting()
    await _wakes(hold, older)
    assert not newer.done()
    assert hold.held == 1
    await _wakes(hold, newer)
    assert hold.held == 0


async def test_a_waiter_whose_place_was_taken_waits_at_the_front() -> None:
    """Woken, it found the place taken by a newcomer: it is next, not last."""
    hold, behind, back = await _two_waiting(second_again=True)
    await _wakes(hold, back)
    assert not behind.done()
    await _wakes(hold, behind)


async def test_a_waiter_that_left_is_skipped() -> None:
    """An upgrade cancelled while it waits (its agent hung up) does not swallow a wake."""
    hold, gone, staying = await _two_waiting()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert hold.held == 1
    await _wakes(hold, staying)
    assert hold.held == 0
