"""The rebalancer's loop on a real event loop, with a node's holdings as plain data: it
hands off the excess above the share, never an agent with a live session, and stands
still while the others are not taking agents (agents let in over the share)."""

from __future__ import annotations

import asyncio
import random

from broker.cluster.rebalance import RebalanceHooks, Rebalancer
from broker.cluster.share import Share


class Node:
    """One node's tunnels as a set; handing one off takes it away, as a closed tunnel."""

    def __init__(self, held: int, elsewhere: int, nodes: int) -> None:
        self.agents = {f"ag{i}" for i in range(held)}
        self.elsewhere = elsewhere
        self.nodes = nodes
        self.busy: set[str] = set()
        self.forced = 0
        #: Every look finds another agent let in over the share (the gate's count).
        self.forcing = False
        self.looks = 0
        self.handed: list[str] = []
        self.changed = asyncio.Event()

    def share(self) -> Share:
        held = len(self.agents)
        return Share(held=held, total=held + self.elsewhere, nodes=self.nodes)

    def hand_off(self, agent: str) -> bool:
        self.agents.discard(agent)
        self.elsewhere += 1  # it landed on another node
        self.handed.append(agent)
        self.changed.set()
        return True

    def let_in(self) -> int:
        self.looks += 1
        if self.forcing:
            self.forced += 1
            if self.looks == 20:
                self.changed.set()
        return self.forced

    def rebalancer(self) -> Rebalancer:
        return Rebalancer(
            RebalanceHooks(
                share=self.share,
                agents=lambda: sorted(self.agents),
                busy=lambda: self.busy,
                hand_off=self.hand_off,
                forced=self.let_in,
                paused=lambda: False,
            ),
            check=0.01,
            spread=0.05,
            settle=0.01,
            rand=random.Random(3),  # noqa: S311 - a schedule's jitter, no secret
        )


async def test_a_node_above_its_share_hands_off_the_excess_but_not_busy_agents() -> None:
    """60 agents held where three nodes share 60: all but 25 go, none with a session."""
    node = Node(held=60, elsewhere=0, nodes=3)
    node.busy = {"ag0", "ag1"}
    rebalancer = node.rebalancer()
    task = asyncio.create_task(rebalancer.run())
    try:
        async with asyncio.timeout(10):
            while node.share().excess > 0:
                node.changed.clear()
                await node.changed.wait()
    finally:
        task.cancel()
    assert len(node.agents) == 25
    assert node.busy <= node.agents
    assert rebalancer.handed_off == len(node.handed) == 35


async def test_a_node_that_let_agents_in_over_its_share_stands_still() -> None:
    """While agents are being let in over the share, nothing is handed off."""
    node = Node(held=60, elsewhere=0, nodes=3)
    node.forcing = True
    task = asyncio.create_task(node.rebalancer().run())
    try:
        async with asyncio.timeout(10):
            await node.changed.wait()
    finally:
        task.cancel()
    assert node.handed == []
