"""Handing agents off when this node holds more than its share (broker.cluster.share).

The node that the load balancer saw ready first after a restart takes the herd; the
others turn nobody away and fill only with the agents that dial later. So every
:data:`CHECK_S` a node looks at its share, and when it holds more than its share and
slack it closes the excess tunnels as "going away", each at a random moment of a
:data:`SPREAD_S` window, as a draining node does: the agents dial the load balancer again
with their jittered back-off, which (leastconn) sends them to the nodes holding fewer, and
this node, full now, turns away any that come back here. An agent with a session live here
is never handed off.

After a round it waits :data:`SETTLE_S` for the others' announcements to count the agents
they took, so that it does not hand off the same excess twice. It stands still while
agents are being let in over its share (:class:`broker.cluster.share.RefusalLedger`): the
others are not taking them, and moving agents round would only cost handshakes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from broker.cluster.drain import close_schedule
from broker.cluster.share import Share
from broker.cluster.view import HEARTBEAT_S

log = logging.getLogger(__name__)

#: How often a node looks at its share.
CHECK_S: Final = HEARTBEAT_S
#: The excess is handed off spread over this window.
SPREAD_S: Final = 5.0
#: After a round, the others announce what they took (two heartbeats) before the next.
SETTLE_S: Final = 2 * HEARTBEAT_S


@dataclass
class RebalanceHooks:
    """What the rebalancer reads and acts on: the node's own calls."""

    share: Callable[[], Share]  # this node's share now
    agents: Callable[[], list[str]]  # agents whose tunnels are here now
    busy: Callable[[], set[str]]  # agents with a session live here
    hand_off: Callable[[str], bool]  # close an agent's tunnel (going away); False if gone
    forced: Callable[[], int]  # agents let in over the share so far
    paused: Callable[[], bool]  # draining: the drainer moves every agent


def pick(agents: list[str], busy: set[str], count: int, rand: random.Random) -> list[str]:
    """``count`` agents to hand off, none with a live session, chosen at random."""
    free = [a for a in agents if a not in busy]
    return rand.sample(free, min(count, len(free)))


class Rebalancer:
    def __init__(
        self,
        hooks: RebalanceHooks,
        *,
        check: float = CHECK_S,
        spread: float = SPREAD_S,
        settle: float = SETTLE_S,
        rand: random.Random | None = None,
    ) -> None:
        self._hooks = hooks
        self._check = check
        self._spread = spread
        self._settle = settle
        self._rand = rand or random.Random()  # noqa: S311 - jitter, not a secret
        self.handed_off = 0

    async def run(self) -> None:
        """Until cancelled (the node stops)."""
        forced = self._hooks.forced()
        while True:
            await asyncio.sleep(self._check)
            was, forced = forced, self._hooks.forced()
            if self._hooks.paused() or forced != was:
                continue
            share = self._hooks.share()
            if share.excess > 0 and await self._round(share):
                await asyncio.sleep(self._settle)

    async def _round(self, share: Share) -> bool:
        """Hand off this node's excess over the window; True when any went."""
        hooks = self._hooks
        chosen = pick(hooks.agents(), hooks.busy(), share.excess, self._rand)
        if not chosen:
            return False
        log.info(
            "holding %d of the cluster's %d agents on %d nodes, more than a fair share "
            "(at most %s): handing %d to the other nodes over %.0f s",
            share.held,
            share.total,
            share.nodes,
            share.limit,
            len(chosen),
            self._spread,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        handed = 0
        for at, agent in close_schedule(chosen, self._rand.random, grace=0.0, spread=self._spread):
            wait = started + at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # Look again before each: the node's own count is current, and an agent may
            # have started a session meanwhile.
            if hooks.paused() or hooks.share().excess <= 0:
                break
            if agent not in hooks.busy() and hooks.hand_off(agent):
                handed += 1
        self.handed_off += handed
        log.info("handed %d agents to the other nodes", handed)
        return handed > 0
