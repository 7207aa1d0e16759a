"""When an agent that just came online is asked for its facts: after the storm.

An agent is online once its SSH handshake is done and the registry holds its tunnel; the
``sl:facts`` round trips (a channel, an exec, the output, the close, then a database
write) only refresh what the agent reported last time. After a broker restart thousands
of agents dial at once, and every facts refresh run during that storm is CPU the
handshakes of the agents still waiting do not get (about a fifth of the broker's work per
agent, and as much again in the agent). So :class:`FactsPacer` lets a refresh start only
while no handshake is under way, at most ``concurrency`` at once, and never later than
``max_wait`` seconds after its tunnel came up (a steady trickle of handshakes must not
starve it). With no storm a refresh starts at once, as before.

The order of the checks is what keeps a storm cheap: a refresh waits on the registry's one
"no handshake under way" event (not on every tunnel change), and checks again once it holds
its place under the concurrency bound, so that a moment between two handshakes does not
release the whole backlog into the storm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from broker.agents.registry import AgentRegistry

#: Facts refreshes under way at once (each a handful of round trips and one small write).
FACTS_CONCURRENCY: Final = 16
#: The longest a refresh waits for the handshakes to calm down.
FACTS_MAX_WAIT_S: Final = 30.0


class FactsPacer:
    """Hands out turns for facts refreshes (see the module docstring)."""

    def __init__(
        self,
        registry: AgentRegistry,
        *,
        concurrency: int = FACTS_CONCURRENCY,
        max_wait: float = FACTS_MAX_WAIT_S,
    ) -> None:
        if concurrency < 1 or max_wait < 0:
            raise ValueError("concurrency must be >= 1 and max_wait >= 0")
        self._registry = registry
        self._slots = asyncio.Semaphore(concurrency)
        self._max_wait = max_wait
        #: Refreshes waiting for their turn now (a metric, and what tests watch).
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a turn for one refresh while the body runs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        self.waiting += 1
        try:
            while True:
                await self._calm(deadline)
                await self._slots.acquire()
                if not self._registry.handshakes_in_flight or loop.time() >= deadline:
                    break
                # A storm went on while this one queued for a slot: give it back.
                self._slots.release()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def _calm(self, deadline: float) -> None:
        """Return once no handshake is under way, or at the deadline."""
        if not self._registry.handshakes_in_flight:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._registry.wait_handshakes_idle()
