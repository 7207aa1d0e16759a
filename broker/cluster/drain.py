"""Draining a node (`secondline node drain NAME`): it takes no new work and hands its agents
to the other nodes, while the sessions it runs end at their own pace.

Once draining, the node answers ``/readyz`` with 503 (the load balancer stops sending it
connections after two failed checks), refuses new sessions and new agent tunnels with 503
and ``Retry-After`` (the agent dials the load balancer again, which picks another node),
and closes its agents' tunnels one by one, each at its own random moment of a window: the
agents reconnect with their jittered back-off, so the other nodes see them arrive spread
out rather than all at once. An agent with a session live here keeps its tunnel until that
session ends. A drained node stays drained until it is restarted (stop it with SIGTERM
once ``secondline cluster status`` shows it holds nothing).

:func:`close_schedule` is the pure plan; :class:`Drainer` performs it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

#: The first tunnel closes this long after the drain starts: the load balancer must have
#: taken the node out first (two failed checks a second apart), or agents would come back.
GRACE_S: Final = 3.0
#: Tunnels close spread over this window, about 1,000 agents a second for 10,000.
SPREAD_S: Final = 10.0
#: How often the drainer looks again at tunnels held back by a live session.
RECHECK_S: Final = 1.0


def close_schedule(
    agents: Iterable[str], rand: Callable[[], float], *, grace: float, spread: float
) -> list[tuple[float, str]]:
    """When to close each agent's tunnel, seconds from the drain's start, earliest first."""
    return sorted((grace + rand() * spread, agent) for agent in agents)


@dataclass
class DrainHooks:
    """What the drainer acts on: the node's own calls."""

    agents: Callable[[], list[str]]  # agents whose tunnels are here now
    busy: Callable[[], set[str]]  # agents with a session live here
    close: Callable[[str], bool]  # close an agent's tunnel (going away); False if gone


class Drainer:
    """Closes the node's tunnels by the schedule, keeping those with live sessions."""

    def __init__(
        self,
        hooks: DrainHooks,
        *,
        grace: float = GRACE_S,
        spread: float = SPREAD_S,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._hooks = hooks
        self._grace = grace
        self._spread = spread
        self._rand = rand
        self.closed = 0

    async def run(self) -> None:
        """Until no tunnel is left here (a draining node admits none)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        plan = close_schedule(
            self._hooks.agents(), self._rand, grace=self._grace, spread=self._spread
        )
        held: list[str] = []
        for at, agent in plan:
            wait = started + at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if agent in self._hooks.busy():
                held.append(agent)  # its session ends at its own pace
            elif self._hooks.close(agent):
                self.closed += 1
        while held:
            await asyncio.sleep(RECHECK_S)
            busy = self._hooks.busy()
            for agent in [a for a in held if a not in busy]:
                held.remove(agent)
                if self._hooks.close(agent):
                    self.closed += 1
        log.info("drained: %d agent tunnels handed to the other nodes", self.closed)
