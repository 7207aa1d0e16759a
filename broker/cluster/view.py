"""What one node knows of the cluster, pure: the other nodes' last announcements, each
kept for a lease. The caller passes ``now`` (a monotonic clock, so a node whose wall
clock is off by 30 s keeps and expires leases like the others).

A node announces every :data:`HEARTBEAT_S`; one not heard of for :data:`LEASE_S` is gone,
with its agents. Checked every second, a node killed by SIGKILL has lost its agents in
every other node's view within ``LEASE_S + 1`` seconds (≤ 10 s, as the cluster promises).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from broker.cluster.messages import Announcement
from broker.db.models_cluster import NODE_LEASE_S

HEARTBEAT_S: Final = 2.0
#: As long as a node's lease in the database (broker.cluster.lease): a node silent for
#: this long has not renewed that lease either, unless it still runs.
LEASE_S: Final = NODE_LEASE_S


@dataclass(frozen=True, slots=True)
class NodeState:
    announcement: Announcement
    heard_at: float
    #: Since when (monotonic) it has said it is ready without a break; None: not ready.
    ready_since: float | None = None

    @property
    def name(self) -> str:
        return self.announcement.node


@dataclass
class ClusterView:
    """The live nodes other than this one, by name."""

    lease: float = LEASE_S
    nodes: dict[str, NodeState] = field(default_factory=dict)

    def heard(self, announcement: Announcement, now: float) -> bool:
        """Take an announcement in; True when the node is new to this view."""
        if announcement.leaving:
            self.nodes.pop(announcement.node, None)
            return False
        before = self.nodes.get(announcement.node)
        since = None
        if announcement.ready:
            since = before.ready_since if before is not None else None
            since = now if since is None else since
        self.nodes[announcement.node] = NodeState(announcement, now, since)
        return before is None

    def expire(self, now: float) -> list[str]:
        """Forget the nodes whose lease ran out; their names."""
        gone = [n for n, s in self.nodes.items() if now - s.heard_at > self.lease]
        for name in gone:
            del self.nodes[name]
        return gone

    def holder_of_agent(self, agent_id: str) -> str | None:
        for name, state in self.nodes.items():
            if agent_id in state.announcement.agents:
                return name
        return None

    def peer_of(self, node: str) -> str | None:
        """Where ``node`` said it is dialled for sessions, while its lease holds."""
        state = self.nodes.get(node)
        return state.announcement.peer or None if state is not None else None

    def clear(self) -> None:
        """Forget everyone (the bus went away): the view is rebuilt from what comes next."""
        self.nodes.clear()
