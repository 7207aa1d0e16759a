"""Which agents this broker node holds a live SSH connection to.

:class:`AgentRegistry` implements :class:`broker.ports.AgentTunnels`: the session hub asks
it for an agent's ``asyncssh.SSHClientConnection``. One connection per agent: a new tunnel
of the same agent replaces the old one, which is closed. Revocation closes the live tunnel
at once and refuses later attachments of that agent in this process (the database refuses
them at the next upgrade too).

Waiters (:meth:`wait_for`) are woken on every change, so tests and the session machinery
wait for an agent to come or go instead of polling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator

import asyncssh
from aiohttp import WSCloseCode

from broker.agents.arrivals import Arrivals
from broker.agents.tunnel_websocket import TunnelWebSocket

log = logging.getLogger(__name__)


class LiveTunnel:
    """One agent's live SSH connection (kept small: a broker holds thousands)."""

    __slots__ = ("agent_id", "close_reason", "conn", "connected_at", "ready", "stream")

    def __init__(
        self,
        agent_id: str,
        conn: asyncssh.SSHClientConnection,
        connected_at: dt.datetime,
        stream: TunnelWebSocket | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.conn = conn
        self.connected_at = connected_at
        self.stream = stream
        self.close_reason = ""
        #: True once the connection's start-up (the facts refresh) is done.
        self.ready = False

    def close(self, reason: str, *, going_away: bool = False) -> None:
        """Disconnect the SSH connection (the tunnel's WebSocket closes with it)."""
        if not self.close_reason:
            self.close_reason = reason
        if going_away and self.stream is not None:
            self.stream.close_code = WSCloseCode.GOING_AWAY
        self.conn.close()


class AgentRegistry:
    """The live tunnels of this node, by agent id."""

    def __init__(self) -> None:
        self._live: dict[str, LiveTunnel] = {}
        self._revoked: set[str] = set()
        self._changed = asyncio.Event()
        #: Set while no SSH handshake is under way (deferred facts wait for it).
        self._handshakes_idle = asyncio.Event()
        self._handshakes_idle.set()
        self.handshakes_in_flight = 0
        self.handshakes_done = 0
        #: Upgrades admitted and not finished (live tunnels, handshakes, tunnels closing):
        #: one socket each, counted against the descriptor budget.
        self.open_tunnels = 0
        #: Tunnels refused or broken off after the upgrade, counted once accounted for.
        self.refused = 0
        #: Agents that came online here lately (a reconnect replacing a tunnel is none).
        self.arrivals = Arrivals()
        #: Told the id of every agent that gets a tunnel here (a cluster node tells the
        #: others, which close a tunnel of the same agent they hold: broker.cluster).
        self.on_attached: Callable[[str], None] | None = None

    # -- broker.ports.AgentTunnels --------------------------------------------------------

    def connection(self, agent_id: str) -> asyncssh.SSHClientConnection | None:
        """The agent's live SSH connection, or None when it is not connected here."""
        tunnel = self._live.get(agent_id)
        return tunnel.conn if tunnel is not None else None

    # -- bookkeeping ----------------------------------------------------------------------

    def is_online(self, agent_id: str) -> bool:
        return agent_id in self._live

    def online_ids(self) -> list[str]:
        return list(self._live)

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[LiveTunnel]:
        return iter(list(self._live.values()))

    def attach(self, tunnel: LiveTunnel) -> bool:
        """Make ``tunnel`` the agent's connection, closing the one it replaces.

        False (and nothing changed) when the agent was revoked in this process.
        """
        if tunnel.agent_id in self._revoked:
            return False
        old = self._live.get(tunnel.agent_id)
        self._live[tunnel.agent_id] = tunnel
        if old is None:
            self.arrivals.note(time.monotonic())
        else:
            log.info("agent %s reconnected: the older tunnel is closed", tunnel.agent_id)
            old.close("replaced by a newer tunnel of the same agent")
        self._notify()
        if self.on_attached is not None:
            self.on_attached(tunnel.agent_id)
        return True

    def detach(self, tunnel: LiveTunnel) -> bool:
        """Forget ``tunnel``; False when a newer tunnel of the agent replaced it already."""
        if self._live.get(tunnel.agent_id) is not tunnel:
            return False
        del self._live[tunnel.agent_id]
        self._notify()
        return True

    def mark_ready(self, tunnel: LiveTunnel) -> None:
        """The tunnel's start-up is done (waiters of :meth:`wait_ready` go on)."""
        tunnel.ready = True
        self._notify()

    def revoke(self, agent_id: str) -> bool:
        """Close the agent's live tunnel and refuse new ones; True if one was open."""
        self._revoked.add(agent_id)
        tunnel = self._live.get(agent_id)
        if tunnel is None:
            return False
        tunnel.close("the agent was revoked")
        return True

    def note_refused(self) -> None:
        """A tunnel was refused after its upgrade and the refusal is accounted for in the
        audit log (an event of its own, or counted in its kind's summary)."""
        self.refused += 1
        self._notify()

    def handshake_started(self) -> None:
        """An SSH handshake began (the limiter and the facts pacing count them)."""
        self.handshakes_in_flight += 1
        self._handshakes_idle.clear()

    def handshake_finished(self) -> None:
        """An SSH handshake ended, whatever its outcome."""
        self.handshakes_in_flight -= 1
        self.handshakes_done += 1
        if self.handshakes_in_flight == 0:
            self._handshakes_idle.set()

    async def wait_handshakes_idle(self) -> None:
        """Return once no SSH handshake is under way (at once when none is). One event,
        not :meth:`_notify`: thousands of deferred facts wait here during a storm, and
        waking them all at every tunnel change would cost the storm quadratic work."""
        await self._handshakes_idle.wait()

    def tunnel_opened(self) -> None:
        """An upgrade was admitted: it holds a socket until :meth:`tunnel_finished`."""
        self.open_tunnels += 1

    def tunnel_finished(self) -> None:
        """An admitted upgrade's handler is done and its socket closed."""
        self.open_tunnels -= 1
        self._notify()

    def is_revoked(self, agent_id: str) -> bool:
        return agent_id in self._revoked

    def hand_off(self, agent_id: str, reason: str) -> bool:
        """Close one agent's tunnel as going away (a draining node): the agent reconnects,
        through the load balancer, to another node. False when it is not connected here."""
        tunnel = self._live.get(agent_id)
        if tunnel is None:
            return False
        tunnel.close(reason, going_away=True)
        return True

    def replaced_elsewhere(self, agent_id: str, node: str) -> bool:
        """The agent got a tunnel on node ``node`` after the one it has here: close this
        one, as :meth:`attach` closes an older tunnel here. False when none is open here
        (or it is closing already)."""
        tunnel = self._live.get(agent_id)
        if tunnel is None or tunnel.close_reason:
            return False  # none here, or closing already (handed off, replaced, revoked)
        log.info("agent %s connected to node %s: the older tunnel here is closed", agent_id, node)
        tunnel.close(f"replaced by a newer tunnel of the same agent on node {node}")
        return True

    def close_all(self, reason: str) -> int:
        """Close every live tunnel (broker shutdown); returns how many."""
        tunnels = list(self._live.values())
        for tunnel in tunnels:
            tunnel.close(reason, going_away=True)
        return len(tunnels)

    # -- waiting for changes --------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, agent_id: str, *, online: bool) -> None:
        """Return once the agent is (``online=True``) or is not connected here."""
        while self.is_online(agent_id) != online:
            await self._changed.wait()

    async def wait_refused(self, count: int) -> None:
        """Return once ``count`` tunnels were refused after their upgrade, in total."""
        while self.refused < count:
            await self._changed.wait()

    async def wait_open_at_most(self, count: int) -> None:
        """Return once at most ``count`` admitted upgrades still hold their socket."""
        while self.open_tunnels > count:
            await self._changed.wait()

    async def wait_ready(self, agent_id: str) -> asyncssh.SSHClientConnection:
        """Return the agent's connection once it is up and its facts were refreshed."""
        while True:
            tunnel = self._live.get(agent_id)
            if tunnel is not None and tunnel.ready:
                return tunnel.conn
            await self._changed.wait()
