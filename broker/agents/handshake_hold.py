"""Upgrades whose handshake turn comes soon wait for it on their connection.

The handshake limiter turns an agent away with 503 and ``Retry-After`` when its place in
line is not due yet, or when too many handshakes are under way. The agent then dials
again: a new TCP connection, a new TLS handshake and a new HTTP request on both ends, to
be let in a second or two later. In a herd of a thousand agents that was most of them,
some twice, and a refused attempt costs about as much CPU as a fifth of an admitted one.
An upgrade whose turn comes within ``max_wait`` seconds now waits for it on the
connection it already paid for, and goes through the checks again when it is due:

- a place in line due at a known time: it waits until then;
- too many handshakes under way: it waits until one finishes (woken oldest first, one
  per finished handshake, so a thousand waiters do not all wake for one free place; one
  that finds the place taken again waits at the front), or at most the limiter's own
  retry time, whichever comes first.

What a wait may hold is bounded: ``max_held`` upgrades at once (each keeps its socket,
its TLS state and aiohttp's request, but no handshake work), no upgrade waits for its
place in line more than ``max_wait`` after it arrived, and none waits for handshakes
under way more than ``max_crowded_wait``: those finish at the rate the machine manages,
which is slower than the limiter's on a loaded one, and every 503 in between would be
one more TLS handshake for it. Past a bound the answer is the 503 it was before, so a
herd larger than the limiter spreads is still sent away and comes back at its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Final

#: How long after it arrived an upgrade may wait for its place in line (a longer wait is
#: answered 503).
HOLD_S: Final = 2.0
#: How long after it arrived an upgrade may wait for a handshake under way to finish: well
#: inside the agent's 30 s to open its WebSocket.
CROWDED_HOLD_S: Final = 10.0
#: Upgrades waiting at once; more are answered 503.
MAX_HELD: Final = 1024


class HandshakeHold:
    """Where upgrades wait for a handshake turn that comes soon (see the module doc)."""

    __slots__ = ("_waiters", "held", "max_crowded_wait", "max_held", "max_wait")

    def __init__(
        self,
        max_wait: float = HOLD_S,
        max_held: int = MAX_HELD,
        max_crowded_wait: float = CROWDED_HOLD_S,
    ) -> None:
        if max_wait < 0 or max_held < 0 or max_crowded_wait < 0:
            raise ValueError("max_wait, max_held and max_crowded_wait must be >= 0")
        self.max_wait = max_wait
        self.max_held = max_held
        self.max_crowded_wait = max_crowded_wait
        #: Upgrades waiting now (a metric, and the bound's count).
        self.held = 0
        #: Those waiting for a handshake to finish, oldest first.
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self, wait: float, arrived: float, *, crowded: bool, again: bool) -> bool:
        """Wait for the turn the limiter named (``wait`` seconds from now; ``crowded``:
        the handshakes under way are at their bound, so a finished one ends the wait
        early; ``again``: this upgrade waited before). False, at once, when the turn is
        past the bound counted from ``arrived`` or the hold is full: the caller answers
        503 as before. True once the caller should check again."""
        bound = self.max_crowded_wait if crowded else self.max_wait
        now = time.monotonic()
        if wait <= 0 or now + wait > arrived + bound or self.held >= self.max_held:
            return False
        self.held += 1
        try:
            if not crowded:
                await asyncio.sleep(wait)
                return True
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if again:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await waiter
            finally:
                # A cancelled or timed-out waiter stays in the deque, done: the next
                # finished handshake skips it.
                waiter.cancel()
            return True
        finally:
            self.held -= 1

    def handshake_finished(self) -> None:
        """A handshake ended (either way): the oldest upgrade waiting for a place checks
        again now."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
