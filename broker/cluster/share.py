"""A node's fair share of the cluster's agents, pure.

After a restart every agent dials at once, and the load balancer gives the herd to
whichever node it sees ready first. So a node turns away a new agent tunnel once it holds
its share (the agents it knows online across the cluster, divided by the nodes that take
agents) plus a slack, and a node far above that hands agents off to the others over a
jittered window (:mod:`broker.cluster.rebalance`).

Who counts as a node that takes agents: this one, and every other node it hears that says
it is ready (serving, not draining) and has said so for :data:`READY_GRACE_S`, the time
the load balancer needs to put it in its pool (two good checks a second apart). Until
then the others are not counted, so a node alone, or among nodes still starting, never
refuses: no agent is left with nowhere to go because of the rule.

A peer's announcement is up to a heartbeat old, and in a herd every node takes in a hundred
agents a second: counted as announced, the others looked a heartbeat behind, so a node of a
cluster the load balancer kept perfectly even looked above its share to itself, and two
nodes taking a 1,000-agent herd turned away 726 agents (the bench's handshakes figure fell
from 192/s on one node to 74/s on two). So each peer counts as what it announced plus what
this node took in since that announcement was heard
(:class:`broker.agents.arrivals.Arrivals`): in an even herd
that is what the peer took in too; when the herd comes only here, it delays this node's
refusals by at most one heartbeat's arrivals, and the rebalancer hands off the rest.

And whatever the view says (a node that announces itself ready while the load balancer
has it out, say), an agent turned away :data:`MAX_REFUSALS` times in a row is let in the
next time: the rule may move an agent, never keep it out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from broker.cluster.view import NodeState

#: The slack above the share: 10 % of it, plus a few agents so that small clusters (and
#: the agents arriving between two announcements) are not turned away over one agent.
SLACK_PERCENT: Final = 10
SLACK_AGENTS: Final = 3
#: A node is counted once it has said it is ready for this long: HAProxy puts a node in
#: its pool after two good checks a second apart (deploy/haproxy.cfg), plus a margin.
READY_GRACE_S: Final = 3.0
#: An agent refused this many times in a row for the share is admitted the next time.
MAX_REFUSALS: Final = 2
#: The ledger forgets everyone past this many agents (memory stays bounded).
LEDGER_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class Share:
    """What one node holds against what it may: ``limit`` is None when it takes every
    agent (no other node is counted)."""

    held: int
    total: int
    nodes: int

    @property
    def limit(self) -> int | None:
        return share_limit(self.total, self.nodes)

    @property
    def full(self) -> bool:
        """One more agent would take this node above its share and slack."""
        limit = self.limit
        return limit is not None and self.held >= limit

    @property
    def excess(self) -> int:
        """How many agents this node holds above its share and slack."""
        limit = self.limit
        return 0 if limit is None else max(0, self.held - limit)


def share_limit(total: int, nodes: int) -> int | None:
    """The most agents one of ``nodes`` nodes should hold of ``total``; None for one node."""
    if nodes <= 1:
        return None
    # In integers: 20 * 1.1 is 22.000000000000004 in floating point, whose ceiling is 23.
    over = 100 * nodes
    return (total * (100 + SLACK_PERCENT) + over - 1) // over + SLACK_AGENTS


def counted(peer: NodeState, now: float, grace: float = READY_GRACE_S) -> bool:
    """Whether another node takes agents now: ready (and not draining) for ``grace``."""
    since = peer.ready_since
    return since is not None and now - since >= grace


def share_of(
    held: int,
    peers: Iterable[NodeState],
    now: float,
    grace: float = READY_GRACE_S,
    *,
    pending: int = 0,
    arrived_since: Callable[[float], int] | None = None,
    expected: int = 0,
) -> Share:
    """This node's share: every agent heard of counts (a draining node's too: they are
    coming), only the nodes that take agents divide them.

    ``held`` and the others' announcements count the same thing, tunnels up (registered);
    ``pending``, this node's tunnels still in their handshake, adds to the total but not
    to what it holds. Counting them as held, when the others' are not counted at all,
    made every node of a cluster restarting together look full to itself: each holds its
    herd in handshakes while the others have announced few, so every agent was turned
    away twice before it was let in (the restart storm bench showed two refusals an
    agent). A herd in handshakes is bounded by the handshake limiter instead, and what a
    node takes above its share is handed off (broker.cluster.rebalance).

    ``arrived_since(moment)``, what this node took in since then, is added to each peer
    that divides the agents, for the time since it was heard (see the module's docstring).

    ``expected``, the agents the cluster expects back (broker.cluster.herd), is the least
    total: while a restart's herd comes back, the agents up so far are only part of it.
    """
    total, nodes = held + max(0, pending), 1
    for peer in peers:
        total += len(peer.announcement.agents)
        if counted(peer, now, grace):
            nodes += 1
            if arrived_since is not None:
                total += arrived_since(peer.heard_at)
    return Share(held=held, total=max(total, expected), nodes=nodes)


@dataclass
class RefusalLedger:
    """Agents turned away for the share, in a row: who is let in regardless."""

    max_refusals: int = MAX_REFUSALS
    refused: dict[str, int] = field(default_factory=dict)
    #: Agents let in although the node was full: the others are not taking them.
    forced: int = 0

    def turns_away(self, agent_id: str, full: bool) -> bool:
        """True to turn the agent away now (counted as one refusal in its row): what
        :meth:`admit` would answer False, decided before the agent is looked up. False
        changes nothing: :meth:`admit` decides after the lookup, when the node may have
        filled meanwhile."""
        if not full or self.refused.get(agent_id, 0) >= self.max_refusals:
            return False
        return not self.admit(agent_id, full)

    def admit(self, agent_id: str, full: bool) -> bool:
        """True to let the agent in now."""
        if not full:
            self.refused.pop(agent_id, None)
            return True
        count = self.refused.get(agent_id, 0)
        if count >= self.max_refusals:
            del self.refused[agent_id]
            self.forced += 1
            return True
        if len(self.refused) >= LEDGER_MAX:
            self.refused.clear()
        self.refused[agent_id] = count + 1
        return False
