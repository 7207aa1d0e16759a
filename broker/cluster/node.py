"""One node's part in the cluster: its name, its presence and the control messages it acts
on, over a :class:`broker.cluster.bus.Bus`.

- **Name**: at start the node asks ``…node.NAME.hello``; an answer means a node of that
  name runs already and this one refuses to start (:class:`NodeNameTaken`).
- **Presence**: every ``HEARTBEAT_S`` the node renews its lease in the database
  (:mod:`broker.cluster.lease`) and announces the agents and sessions it holds; the other
  nodes keep that for a lease (:mod:`broker.cluster.view`). When a node falls silent and
  its lease in the database has lapsed too, the survivors mark its agents offline in the
  database, so the console shows them offline within seconds rather than after the agents
  come back elsewhere, and seal its sessions. A node silent on NATS whose lease is renewed
  is alive (starting slowly, or cut off from NATS): it is looked at again every second,
  never taken for dead on silence alone.
- **Control**: ``agent.revoke`` and ``user.disable`` are broadcast and every node acts on
  them with its own local calls; so is ``agent.connected``, sent when an agent gets a
  tunnel here, on which a node holding an older tunnel of that agent closes it;
  ``session.kill`` is asked of the node that holds the session, which answers whether it
  ended it.
- **NATS away**: live sessions and tunnels go on; nothing expires (a node that hears no one
  cannot tell a dead node from its own outage); cross-node actions fail at once with
  :class:`BusUnavailable`. When NATS returns, the node announces itself and writes its
  agents' presence again, and its view is rebuilt from the next heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from broker.cluster.bus import (
    Bus,
    BusUnavailable,
    Message,
    NodeNameTaken,
    NoResponder,
    Subscription,
)
from broker.cluster.lease import NodeLeases
from broker.cluster.messages import (
    Announcement,
    BadMessage,
    Control,
    ControlResult,
    Steer,
    SteerResult,
    Subjects,
)
from broker.cluster.view import HEARTBEAT_S, LEASE_S, ClusterView
from broker.config import valid_node_name

log = logging.getLogger(__name__)

#: How long a control request waits for the holding node (the promise is 2 s end to end).
CONTROL_WAIT_S: Final = 1.5
#: How long start-up waits for a node of the same name to answer.
HELLO_WAIT_S: Final = 1.0
#: How long a node listens, after its start or NATS's return, before it takes the nodes the
#: database names but it has not heard for silent (:meth:`ClusterNode._sweep`).
SWEEP_AFTER_S: Final = LEASE_S + HEARTBEAT_S


@dataclass(frozen=True)
class LocalActions:
    """What this node does on its own: the existing local calls of the sessions and agents."""

    held: Callable[[], tuple[list[str], list[str]]]  # (agent ids, session ids) held here
    kill: Callable[[Control], Awaitable[bool]]
    revoke: Callable[[str], bool]
    disable: Callable[[str], bool]
    # The node's agents' presence written again (after NATS returns).
    rewrite_presence: Callable[[], None]
    # A gone node's agents marked offline in the database.
    forget_node: Callable[[str], Awaitable[None]]
    # Start draining this node (`secondline node drain`); False when it drains already.
    drain: Callable[[Control], Awaitable[bool]] | None = None
    # An invitation or hand-over for a session of this node, asked by another node.
    steer: Callable[[Steer], SteerResult] = lambda _: SteerResult("not_live")
    # Whether the node takes agents now (serving, not draining); announced to the others.
    ready: Callable[[], bool] | None = None
    # The nodes the database names as holding agents or live sessions.
    recorded: Callable[[], Awaitable[set[str]]] | None = None
    # Another node took a tunnel of this agent: close the older one here, if any.
    connected_elsewhere: Callable[[str, str], bool] = lambda _agent, _node: False


class ClusterNode:
    def __init__(
        self,
        bus: Bus,
        name: str,
        actions: LocalActions,
        *,
        cluster: str,
        url: str = "",
        peer: str = "",
        heartbeat: bool = True,
        leases: NodeLeases | None = None,
    ) -> None:
        self.bus = bus
        self.subjects = Subjects(cluster)
        self.name = name
        self.url = url
        self.peer = peer
        self.view = ClusterView()
        self._actions = actions
        self._subs: list[Subscription] = []
        self._ticker: asyncio.Task[None] | None = None
        self._was_connected = True
        # When this node has heard the cluster long enough to know who runs (a lease and a
        # heartbeat since its start or since NATS came back); None once it has looked.
        self._sweep_at: float | None = None
        # A single node has nobody to announce itself to: no heartbeat, no lease ticker.
        self._heartbeat = heartbeat
        self._leases = leases
        # Nodes silent on NATS that the database names or this node heard before, not yet
        # known dead: each is taken for dead once its lease in the database has lapsed.
        self._silent: set[str] = set()
        # Of those, the ones whose renewed lease was logged (once per silence).
        self._alive_said: set[str] = set()

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim the name, listen, announce; NodeNameTaken when the name is in use."""
        hello = self.subjects.node(self.name, "hello")
        try:
            answer = await self.bus.request(hello, b"{}", HELLO_WAIT_S)
        except (NoResponder, TimeoutError):
            answer = b""
        if answer:
            raise NodeNameTaken(
                f"a node named {self.name!r} is running in this cluster already; give this "
                "one another name (secondline serve --node NAME), or stop the other first"
            )
        self._subs = [
            await self.bus.subscribe(hello, self._on_hello),
            await self.bus.subscribe(self.subjects.presence, self._on_presence),
            await self.bus.subscribe(self.subjects.status, self._on_status),
            await self.bus.subscribe(self.subjects.control, self._on_control),
            await self.bus.subscribe(self.subjects.node(self.name, "kill"), self._on_kill),
            await self.bus.subscribe(self.subjects.node(self.name, "drain"), self._on_drain),
            await self.bus.subscribe(self.subjects.node(self.name, "steer"), self._on_steer),
        ]
        self.bus.on_reconnect(self._on_reconnect)
        if self._heartbeat:
            # Before anything of this node names it in the database (its agents online, its
            # sessions live): no other node may take it for dead from then on.
            await self._renew()
            await self._announce()
            self._sweep_at = time.monotonic() + SWEEP_AFTER_S
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        """Say goodbye (the others forget this node at once), stop listening."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(BusUnavailable):
            await self.bus.publish(
                self.subjects.presence, Announcement(self.name, (), (), leaving=True).serialize()
            )
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        if self._leases is not None:
            await self._leases.release()

    def announcement(self) -> Announcement:
        agents, sessions = self._actions.held()
        ready = self._actions.ready() if self._actions.ready is not None else True
        return Announcement(
            self.name, tuple(agents), tuple(sessions), url=self.url, peer=self.peer, ready=ready
        )

    async def announce_now(self) -> None:
        """Announce before the next heartbeat (the node became ready, or stopped being)."""
        if self._heartbeat:
            await self._announce()

    async def _announce(self) -> None:
        with contextlib.suppress(BusUnavailable):
            await self.bus.publish(self.subjects.presence, self.announcement().serialize())

    async def _tick(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_S
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            connected = self.bus.connected
            if connected and self._was_connected:
                self._silent.update(self.view.expire(now))
                if self._sweep_at is not None and now >= self._sweep_at:
                    self._sweep_at = None
                    await self._sweep()
                await self._bury()
            self._was_connected = connected
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                await self._renew()
                await self._announce()

    async def _renew(self) -> None:
        # Renewed before each announcement: by the time this node's presence lease runs out
        # in another node's view, its lease in the database has lapsed as well.
        if self._leases is not None:
            await self._leases.renew()

    async def _bury(self) -> None:
        """Forget the silent nodes whose lease in the database has lapsed: they are dead."""
        self._silent -= set(self.view.nodes)
        self._alive_said &= self._silent
        if not self._silent:
            return
        dead: set[str] | None = set(self._silent)
        if self._leases is not None:
            dead = await self._leases.lapsed(self._silent)
        if dead is None:
            return  # the database did not answer: the next tick looks again
        for name in sorted(self._silent - dead - self._alive_said):
            self._alive_said.add(name)
            log.warning(
                "node %s does not announce itself, but it renews its lease in the database: "
                "it runs (starting, or cut off from NATS), and is not taken for dead",
                name,
            )
        for gone in sorted(dead):
            self._silent.discard(gone)
            self._alive_said.discard(gone)
            log.warning(
                "node %s stopped announcing itself and its lease lapsed: its agents are "
                "offline, its sessions are sealed as interrupted",
                gone,
            )
            await self._forget(gone)

    async def _forget(self, gone: str) -> None:
        try:
            await self._actions.forget_node(gone)
        except Exception:  # a task boundary: the next expiry, sweep or start fixes it
            log.exception("marking the agents of node %s offline failed", gone)

    async def _sweep(self) -> None:
        """Look at the nodes the database names that do not announce themselves.

        A lease runs out only in the view of a node that heard the dead one: a node that
        died while no other ran (the whole cluster stopped at once), or while this node was
        cut off from NATS, is in nobody's view. Once this node has listened for a lease and
        a heartbeat, every running node that reaches NATS has announced itself to it; a
        node the database names (agents marked online, sessions live) that it has not
        heard is silent, and dead once its lease in the database has lapsed too
        (:meth:`_bury`): then its agents go offline and its sessions are sealed as
        interrupted, by exactly one node (the claim), as when a lease runs out. Silence
        alone is not enough: a node that started a moment before this look, or whose
        announcements are late, renews its lease and is left alone."""
        if self._actions.recorded is None:
            return
        try:
            named = await self._actions.recorded()
        except Exception:  # a task boundary: the next start or NATS return looks again
            log.exception("reading which nodes the database names failed")
            return
        for silent in sorted(named - set(self.view.nodes) - {self.name}):
            log.warning("node %s is named in the database but does not announce itself", silent)
            self._silent.add(silent)

    async def _on_reconnect(self) -> None:
        # Every lease heard before the outage is stale; rebuild from the next heartbeats
        # instead of expiring nodes that were only out of earshot, and look for the nodes
        # that died meanwhile once every running one has been heard again.
        self.view.clear()
        self._silent.clear()
        self._alive_said.clear()
        if self._heartbeat:
            self._sweep_at = time.monotonic() + SWEEP_AFTER_S
        self._actions.rewrite_presence()
        await self._announce()

    # -- listening -------------------------------------------------------------------------

    async def _on_hello(self, message: Message) -> None:
        if message.reply:
            await self.bus.publish(message.reply, self.name.encode())

    async def _on_presence(self, message: Message) -> None:
        try:
            announcement = Announcement.parse(message.data)
        except BadMessage as exc:
            log.warning("dropped a presence message: %s", exc)
            return
        if announcement.node == self.name:
            return
        if self.view.heard(announcement, time.monotonic()):
            log.info("node %s joined the cluster", announcement.node)

    async def _on_status(self, message: Message) -> None:
        if message.reply:
            await self.bus.publish(message.reply, self.announcement().serialize())

    async def _on_control(self, message: Message) -> None:
        try:
            control = Control.parse(message.data)
        except BadMessage as exc:
            log.warning("dropped a control message: %s", exc)
            return
        if control.origin == self.name:
            return  # the node it was issued on has acted already
        if control.kind == "agent.revoke":
            if self._actions.revoke(control.target):
                log.info(
                    "agent %s revoked on node %s: tunnel closed", control.target, control.origin
                )
        elif control.kind == "user.disable":
            self._actions.disable(control.target)
        elif control.kind == "agent.connected":
            self._actions.connected_elsewhere(control.target, control.origin)

    async def _on_kill(self, message: Message) -> None:
        try:
            control = Control.parse(message.data)
        except BadMessage as exc:
            log.warning("dropped a kill request: %s", exc)
            return
        done = control.kind == "session.kill" and await self._actions.kill(control)
        if message.reply:
            await self.bus.publish(message.reply, ControlResult(self.name, done).serialize())

    async def _on_drain(self, message: Message) -> None:
        try:
            control = Control.parse(message.data)
        except BadMessage as exc:
            log.warning("dropped a drain request: %s", exc)
            return
        drain = self._actions.drain
        done = control.kind == "node.drain" and drain is not None and await drain(control)
        if message.reply:
            await self.bus.publish(message.reply, ControlResult(self.name, done).serialize())

    async def _on_steer(self, message: Message) -> None:
        try:
            steer = Steer.parse(message.data)
        except BadMessage as exc:
            log.warning("dropped a steer request: %s", exc)
            return
        result = self._actions.steer(steer)
        if message.reply:
            await self.bus.publish(message.reply, result.serialize())

    # -- asking ----------------------------------------------------------------------------

    async def steer_on(self, node: str, steer: Steer) -> SteerResult:
        """Ask ``node`` to invite or hand over in a session it runs. NoResponder when that
        node is not running, TimeoutError when it did not answer, BadMessage when its
        answer is out of shape."""
        if not valid_node_name(node):
            raise NoResponder(f"{node!r} is not a node name")
        answer = await self.bus.request(
            self.subjects.node(node, "steer"), steer.serialize(), CONTROL_WAIT_S
        )
        return SteerResult.parse(answer)

    async def broadcast(self, kind: str, target: str, *, by: str, source: str = "") -> None:
        """Tell every other node (revoke, disable); BusUnavailable when NATS is away."""
        control = Control(kind=kind, target=target, by=by, origin=self.name, source=source)
        await self.bus.publish(self.subjects.control, control.serialize())

    async def drain_on(self, node: str, *, by: str, source: str = "") -> bool:
        """Ask ``node`` to drain; True when it started now (False: it drains already).
        NoResponder when no node of that name runs, TimeoutError when it did not answer."""
        control = Control(kind="node.drain", target=node, by=by, origin=self.name, source=source)
        answer = await self.bus.request(
            self.subjects.node(node, "drain"), control.serialize(), CONTROL_WAIT_S
        )
        try:
            return ControlResult.parse(answer).done
        except BadMessage:
            return False

    async def kill_on(
        self, node: str, session_id: str, *, by: str, source: str = "", reason: str = ""
    ) -> bool:
        """Ask ``node`` to end ``session_id``; True when it did. NoResponder when that node
        is not running, TimeoutError when it did not answer in time."""
        if node == self.name or not valid_node_name(node):
            return False
        control = Control(
            kind="session.kill",
            target=session_id,
            by=by,
            origin=self.name,
            source=source,
            reason=reason,
        )
        answer = await self.bus.request(
            self.subjects.node(node, "kill"), control.serialize(), CONTROL_WAIT_S
        )
        try:
            return ControlResult.parse(answer).done
        except BadMessage:
            return False
