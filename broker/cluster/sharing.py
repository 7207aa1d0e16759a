"""This node's part in spreading agents fairly over the cluster (broker.cluster.share): the
tunnel endpoint's gate, the rebalancer, and telling the other nodes of every tunnel up here."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from broker.agents import agent_store
from broker.agents.feature import AGENT_REGISTRY
from broker.agents.tunnel_endpoint import SHARE_GATE, ShareGate
from broker.cluster.bus import BusUnavailable
from broker.cluster.herd import HerdEstimate
from broker.cluster.node import ClusterNode
from broker.cluster.rebalance import RebalanceHooks, Rebalancer
from broker.cluster.share import RefusalLedger, Share, share_of
from broker.services import SERVICES
from broker.sessions.runtime import SESSIONS
from broker.supervision import OnFailure, Supervisor


@dataclass
class Sharing:
    """This node's part in spreading agents fairly (broker.cluster.share)."""

    #: The app has started every feature: the node serves (and says so to the others).
    serving: bool = False
    ledger: RefusalLedger = field(default_factory=RefusalLedger)
    rebalancer: Rebalancer | None = None
    #: The agents the cluster expects back (a restart's herd), read from the database.
    herd: HerdEstimate | None = None


SHARING: Final = web.AppKey("cluster_sharing", Sharing)


def tell_connected(app: web.Application, node: ClusterNode, tasks: Supervisor) -> None:
    """Tell the other nodes of every agent that gets a tunnel here: one holding an older
    tunnel of the same agent (an agent's machine cloned, or a tunnel half-open after the
    agent reconnected through the load balancer) closes it, so one node holds each agent."""
    registry = app.get(AGENT_REGISTRY)
    if registry is None:
        return

    async def tell(agent_id: str) -> None:
        with contextlib.suppress(BusUnavailable):
            await node.broadcast("agent.connected", agent_id, by=f"agent:{agent_id}")

    def attached(agent_id: str) -> None:
        tasks.spawn("telling the cluster of an agent's tunnel", tell(agent_id))

    registry.on_attached = attached


def share_now(app: web.Application, node: ClusterNode, *, admitted: bool) -> Share:
    """This node's share now, of the tunnels up here and announced by the others;
    ``admitted`` adds the upgrades still in their handshake to the total (they are coming),
    not to what this node holds (broker.cluster.share.share_of)."""
    registry = app.get(AGENT_REGISTRY)
    herd = app[SHARING].herd
    expected = herd.expected if herd is not None else 0
    if registry is None:
        return share_of(0, node.view.nodes.values(), time.monotonic(), expected=expected)
    held = len(registry)
    pending = registry.open_tunnels - held if admitted else 0
    return share_of(
        held,
        node.view.nodes.values(),
        time.monotonic(),
        pending=pending,
        arrived_since=registry.arrivals.since,
        expected=expected,
    )


def start_sharing(app: web.Application, node: ClusterNode, tasks: Supervisor) -> None:
    """The tunnel endpoint's gate and the rebalancer of a cluster node."""
    sharing = app[SHARING]
    services = app[SERVICES]

    async def seen_since(since: dt.datetime) -> int:
        async with services.db() as db:
            return await agent_store.count_seen_since(db, since)

    sharing.herd = HerdEstimate(seen_since, services.clock)
    # RESTART: the count is read again from the database on every round.
    tasks.keep("counting the expected agents", sharing.herd.run, on_failure=OnFailure.RESTART)

    def full() -> bool:
        # Without the bus the view is stale: better take the agent than guess.
        return node.bus.connected and share_now(app, node, admitted=True).full

    def admits(agent_id: str) -> bool:
        return sharing.ledger.admit(agent_id, full())

    def turns_away(agent_id: str) -> bool:
        return sharing.ledger.turns_away(agent_id, full())

    app[SHARE_GATE] = ShareGate(admits, turns_away)

    def agents() -> list[str]:
        registry = app.get(AGENT_REGISTRY)
        return registry.online_ids() if registry is not None else []

    def hand_off(agent_id: str) -> bool:
        registry = app.get(AGENT_REGISTRY)
        return registry is not None and registry.hand_off(
            agent_id, "the node holds more than its share of agents: reconnect to another node"
        )

    rebalancer = Rebalancer(
        RebalanceHooks(
            share=lambda: share_now(app, node, admitted=False),
            agents=agents,
            busy=lambda: busy_agents(app),
            hand_off=hand_off,
            forced=lambda: sharing.ledger.forced,
            paused=lambda: app[SERVICES].draining or not node.bus.connected,
        )
    )
    sharing.rebalancer = rebalancer
    # RESTART: it keeps no state a new loop could not rebuild from the view.
    tasks.keep("rebalance", rebalancer.run, on_failure=OnFailure.RESTART)


def busy_agents(app: web.Application) -> set[str]:
    """Agents with a session live on this node: their tunnels stay."""
    sessions = app.get(SESSIONS)
    if sessions is None:
        return set()
    return {live.facts.agent_id for live in sessions.manager.live.values()}
