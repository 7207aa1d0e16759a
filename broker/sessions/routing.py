"""Sessions whose agent is held by another node of a cluster (docs/cluster.md, "Sessions
across nodes"): what a way into a session (the SSH gateway, the browser terminal) holds
once it is attached, and what the session manager asks of the cluster to reach a hub that
runs on another node.

Exactly one node runs a session's hub and recorder: the node that holds the agent's
tunnel. A participant on any other node is a :class:`~broker.sessions.facts.Terminal` of
that hub, relayed node to node; the edge then holds a :class:`SessionHandle` that forwards
what its staff member does. The manager knows nothing of how the nodes talk: the cluster
hands it a :class:`SessionRouter` (``broker.cluster.peer_client``)."""

from __future__ import annotations

from typing import Final, Protocol

from broker.sessions.admission import JoinRequest, OpenRequest
from broker.sessions.facts import Terminal
from broker.sessions.hub_core import Member

#: Refusal codes of a route that failed before the other node judged the request.
NODE_UNREACHABLE: Final = "node_unreachable"
BUS_UNAVAILABLE: Final = "bus_unavailable"


class SessionHandle(Protocol):
    """What an edge does with the session it is attached to: the local hub
    (:class:`~broker.sessions.hub.LiveSession`) or a hub on another node."""

    @property
    def session_id(self) -> str: ...

    @property
    def size(self) -> tuple[int, int]:
        """The PTY's columns and rows as the session started."""

    def input(self, pid: int, data: bytes) -> None: ...

    def answer_back(self, pid: int, data: bytes) -> None: ...

    def input_eof(self, pid: int) -> None: ...

    def resize(self, pid: int, cols: int, rows: int) -> None: ...

    def send_signal(self, pid: int, name: str) -> None: ...

    def drained(self, pid: int) -> None:
        """The participant's terminal sent some of what it held."""

    def detach(self, pid: int, reason: str) -> None: ...

    def end_by_owner(self, pid: int) -> None:
        """The participant asked to end the session; only whoever holds control may."""


class RouteFailed(Exception):
    """The other node could not be asked (unreachable, or the bus is away): a refusal with
    a stable ``code`` and a sentence that says what to do, audited by the manager."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class SessionRouter(Protocol):
    """How the manager reaches a hub on another node."""

    def holder(self, agent_id: str) -> str | None:
        """The other node that announces the agent's tunnel, or None."""

    async def open(
        self, node: str, req: OpenRequest, owner: Terminal
    ) -> tuple[SessionHandle, Member]:
        """Start the session on ``node``; raises RouteFailed, or the SessionError that
        node answered (audited there)."""

    async def attach(
        self, node: str, req: JoinRequest, terminal: Terminal
    ) -> tuple[SessionHandle, Member]:
        """Join or observe a session that ``node`` runs; raises as :meth:`open`."""
