"""The cluster feature of the broker app: the bus, this node's presence and control, and
the operations endpoints (``/readyz``, ``/metrics``).

A single node runs the same code on an :class:`InProcessBus` (nothing leaves the process,
no NATS needed); a node with ``[cluster] nats_url`` runs on NATS. Its context comes first
of the features, so a node whose name is taken refuses to start before it touches any
state of the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from broker.agents import agent_store
from broker.agents.feature import AGENT_REGISTRY
from broker.agents.tunnel_endpoint import SHARE_GATE, TUNNEL_RUNTIME, ShareGate
from broker.cluster import peering
from broker.cluster.bus import Bus, BusUnavailable, InProcessBus
from broker.cluster.drain import Drainer, DrainHooks
from broker.cluster.health import NodeFigures, metrics_registry
from broker.cluster.herd import HerdEstimate
from broker.cluster.lease import NodeLeases
from broker.cluster.messages import Control, Steer, SteerResult
from broker.cluster.nats_bus import NatsBus
from broker.cluster.node import ClusterNode, LocalActions
from broker.cluster.peer_client import PeerRouter
from broker.cluster.peer_server import PEER_STATE, PeerState, close_peer_sockets, peer_socket
from broker.cluster.readiness import PROBE_WAIT_S, DatabaseProbe
from broker.cluster.rebalance import RebalanceHooks, Rebalancer
from broker.cluster.share import RefusalLedger, Share, share_of
from broker.config import peer_url
from broker.db.models_agents import Agent
from broker.db.models_sessions import RemoteSession, SessionOutbox
from broker.services import SERVICES
from broker.sessions.hub_core import HubClosed, HubRefused, roles_of
from broker.sessions.runtime import SESSION_ROUTER, SESSIONS
from broker.sessions.store import LIVE_STATES
from broker.supervision import OnFailure, Supervisor

log = logging.getLogger(__name__)

CLUSTER: Final = web.AppKey("cluster", ClusterNode)
#: The cluster feature's background work (a drain).
CLUSTER_TASKS: Final = web.AppKey("cluster_tasks", Supervisor)
#: The name of a single node's in-process member (it is in no cluster).
SINGLE: Final = "single"
#: /readyz's look at the database, on a connection of its own (broker.cluster.readiness).
DATABASE_PROBE: Final = web.AppKey("cluster_database_probe", DatabaseProbe)


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


def setup(app: web.Application) -> None:
    app[SHARING] = Sharing()
    app.cleanup_ctx.append(_probe_ctx)
    app.cleanup_ctx.append(_cluster_ctx)
    # on_startup runs after every feature's context has started: the node serves now.
    app.on_startup.append(_serving)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get(peering.PATH, peer_socket)
    # Appended after the sessions' drain (inserted first of all shutdown handlers): the
    # sessions have told their participants why they end before their streams close.
    app.on_shutdown.append(_close_peers)


async def _close_peers(app: web.Application) -> None:
    """Close this node's peer streams as going away, both ways (docs/cluster.md, "Stopping
    a node"): the other nodes record why the participants left."""
    router = app.get(SESSION_ROUTER)
    if isinstance(router, PeerRouter):
        await router.going_away()
    await close_peer_sockets(app)


async def _serving(app: web.Application) -> None:
    app[SHARING].serving = True
    node = app.get(CLUSTER)
    if node is not None:
        await node.announce_now()  # the others count it sooner than the next heartbeat


@dataclass(frozen=True)
class Metrics:
    figures: NodeFigures
    registry: CollectorRegistry


METRICS: Final = web.AppKey("cluster_metrics", Metrics)


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text: the node's figures, the outbox depth read now."""
    metrics = request.app[METRICS]
    figures = metrics.figures
    figures.outbox_depth = await _outbox_depth(request.app, figures.outbox_depth)
    response = web.Response(body=generate_latest(metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def _actions(app: web.Application) -> LocalActions:
    def held() -> tuple[list[str], list[str]]:
        registry = app.get(AGENT_REGISTRY)
        sessions = app.get(SESSIONS)
        agents = registry.online_ids() if registry is not None else []
        return agents, list(sessions.manager.live) if sessions is not None else []

    async def kill(control: Control) -> bool:
        sessions = app.get(SESSIONS)
        if sessions is None:
            return False
        return await sessions.manager.kill(
            control.target, control.by, source=control.source, reason=control.reason
        )

    def revoke(agent_id: str) -> bool:
        sessions = app.get(SESSIONS)
        if sessions is not None:
            # As on the node it was issued on: "revoked" first, then the tunnel closes.
            sessions.manager.end_agent_sessions(agent_id)
        registry = app.get(AGENT_REGISTRY)
        return registry.revoke(agent_id) if registry is not None else False

    def disable(name: str) -> bool:
        sessions = app.get(SESSIONS)
        if sessions is not None:
            sessions.manager.end_account_sessions(name)
        return True

    def rewrite_presence() -> None:
        runtime = app.get(TUNNEL_RUNTIME)
        if runtime is not None:
            for tunnel in runtime.registry:
                runtime.presence.online(tunnel.agent_id, tunnel.connected_at)

    async def forget_node(node: str) -> None:
        services = app[SERVICES]
        async with services.db() as db, db.begin():
            await agent_store.mark_node_offline(db, node, dead=True)
        sessions = app.get(SESSIONS)
        if sessions is not None:
            # Its sessions are sealed as interrupted by one of the survivors (a claim in the
            # database picks it), in the background: sealing reads transcripts, and this
            # node's heartbeat must not wait for that.
            manager = sessions.manager
            manager.spawn(manager.finisher.recover_node(node), f"sealing node {node}'s sessions")

    async def drain(control: Control) -> bool:
        return start_drain(app, by=control.by)

    async def recorded() -> set[str]:
        async with app[SERVICES].db() as db:
            agents = select(Agent.node).where(Agent.online.is_(True), Agent.node.is_not(None))
            live = select(RemoteSession.node).where(
                RemoteSession.state.in_(LIVE_STATES), RemoteSession.node.is_not(None)
            )
            rows = (await db.execute(agents.union(live))).scalars().all()
        return {str(name) for name in rows if name}

    def connected_elsewhere(agent_id: str, node: str) -> bool:
        registry = app.get(AGENT_REGISTRY)
        if registry is None or not registry.replaced_elsewhere(agent_id, node):
            return False
        app[CLUSTER_TASKS].spawn(
            "auditing a tunnel replaced on another node", _audit_replaced(app, agent_id, node)
        )
        return True

    def steer(request: Steer) -> SteerResult:
        sessions = app.get(SESSIONS)
        live = sessions.manager.get(request.session) if sessions is not None else None
        if live is None or not live.running:
            return SteerResult("not_live", f"session {request.session} is not live any more")
        try:
            if request.kind == "session.invite":
                live.invite(request.by, request.name)
            else:
                live.hand_over(request.by, request.name)
        except HubRefused as exc:
            return SteerResult(exc.code, exc.message)
        except HubClosed as exc:
            return SteerResult("ending", str(exc))
        people = tuple((p["name"], p["role"]) for p in roles_of(live.core.members))
        return SteerResult("", "", people, tuple(sorted(live.core.invited)))

    return LocalActions(
        held=held,
        kill=kill,
        revoke=revoke,
        disable=disable,
        rewrite_presence=rewrite_presence,
        forget_node=forget_node,
        drain=drain,
        steer=steer,
        ready=lambda: app[SHARING].serving and not app[SERVICES].draining,
        recorded=recorded,
        connected_elsewhere=connected_elsewhere,
    )


async def _audit_replaced(app: web.Application, agent_id: str, node: str) -> None:
    """One agent held a tunnel here and got one on ``node``: this one was closed."""
    services = app[SERVICES]
    await services.audit.record(
        actor=f"agent:{agent_id}",
        action="agent.tunnel",
        target=agent_id,
        outcome="refused",
        details={
            "code": "connected_elsewhere",
            "node": node,
            "reason": f"the agent connected to node {node} too: its older tunnel on node "
            f"{services.config.node} was closed",
        },
    )


def _tell_connected(app: web.Application, node: ClusterNode, tasks: Supervisor) -> None:
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


def _share(app: web.Application, node: ClusterNode, *, admitted: bool) -> Share:
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


def _start_sharing(app: web.Application, node: ClusterNode, tasks: Supervisor) -> None:
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
        return node.bus.connected and _share(app, node, admitted=True).full

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
            share=lambda: _share(app, node, admitted=False),
            agents=agents,
            busy=lambda: _busy_agents(app),
            hand_off=hand_off,
            forced=lambda: sharing.ledger.forced,
            paused=lambda: app[SERVICES].draining or not node.bus.connected,
        )
    )
    sharing.rebalancer = rebalancer
    # RESTART: it keeps no state a new loop could not rebuild from the view.
    tasks.keep("rebalance", rebalancer.run, on_failure=OnFailure.RESTART)


def _busy_agents(app: web.Application) -> set[str]:
    """Agents with a session live on this node: their tunnels stay."""
    sessions = app.get(SESSIONS)
    if sessions is None:
        return set()
    return {live.facts.agent_id for live in sessions.manager.live.values()}


def start_drain(app: web.Application, *, by: str) -> bool:
    """Make this node drain (see broker.cluster.drain); False when it drains already."""
    services = app[SERVICES]
    if services.draining:
        return False
    services.draining = True
    log.warning(
        "node %s is draining (asked by %s): no new sessions or agents; its agents are "
        "handed to the other nodes, its live sessions end at their own pace",
        services.config.node or SINGLE,
        by,
    )

    def agents() -> list[str]:
        registry = app.get(AGENT_REGISTRY)
        return registry.online_ids() if registry is not None else []

    def busy() -> set[str]:
        return _busy_agents(app)

    def close(agent_id: str) -> bool:
        registry = app.get(AGENT_REGISTRY)
        return registry is not None and registry.hand_off(
            agent_id, "the broker node is draining: reconnect to another node"
        )

    drainer = Drainer(DrainHooks(agents=agents, busy=busy, close=close))
    tasks = app[CLUSTER_TASKS]
    tasks.spawn("drain", drainer.run(), cancel_at_stop=True)
    node = app.get(CLUSTER)
    if node is not None:
        # The others stop counting it as a node that takes agents now, not at the next beat.
        tasks.spawn("announcing the drain", node.announce_now(), cancel_at_stop=True)
    return True


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    config = services.config
    bus: Bus
    leases: NodeLeases | None = None
    if config.clustered:
        bus = await NatsBus.connect(config.cluster_nats_url, name=config.node)
        leases = NodeLeases(services.engine, config.node)
    else:
        bus = InProcessBus()
    node = ClusterNode(
        bus,
        config.node or SINGLE,
        _actions(app),
        cluster=config.cluster_name,
        url=config.public_url,
        peer=peer_url(config) if config.clustered else "",
        heartbeat=config.clustered,
        leases=leases,
    )
    try:
        await node.start()
    except BaseException:
        await bus.close()
        if leases is not None:
            await leases.close()
        raise
    app[CLUSTER] = node
    tasks = Supervisor("cluster")
    await tasks.open()
    app[CLUSTER_TASKS] = tasks
    router: PeerRouter | None = None
    if config.clustered:
        # Sessions across nodes: node to node over each node's HTTPS port (docs/cluster.md).
        key = peering.peer_key(services.keys.audit_key)
        app[PEER_STATE] = PeerState(node.name, key)
        router = PeerRouter(node, key, _tls_sha256(services.keys.tls_cert_pem))
        await router.start()
        app[SESSION_ROUTER] = router
        _start_sharing(app, node, tasks)
        _tell_connected(app, node, tasks)
    figures = _figures(app, node)
    services.audit.observers.append(figures.audited)
    app[METRICS] = Metrics(figures, metrics_registry(figures))
    if config.clustered:
        log.info("node %s joined the cluster at %s", config.node, config.cluster_nats_url)
    try:
        yield
    finally:
        services.audit.observers.remove(figures.audited)
        if router is not None:
            await router.stop()
        await tasks.stop()
        await node.stop()
        await bus.close()
        if leases is not None:
            await leases.close()


def _tls_sha256(cert_pem: bytes) -> bytes:
    """The SHA-256 of the certificate every node presents: a peer is trusted by it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256())


def _figures(app: web.Application, node: ClusterNode) -> NodeFigures:
    def registry_value(name: str) -> int:
        registry = app.get(AGENT_REGISTRY)
        return int(getattr(registry, name, 0)) if registry is not None else 0

    def sessions_live() -> int:
        sessions = app.get(SESSIONS)
        return len(sessions.manager.live) if sessions is not None else 0

    def agents_held() -> int:
        registry = app.get(AGENT_REGISTRY)
        return len(registry) if registry is not None else 0

    return NodeFigures(
        node=node.name,
        agents_held=agents_held,
        sessions_live=sessions_live,
        handshakes=lambda: registry_value("handshakes_done"),
        tunnel_refusals=lambda: registry_value("refused"),
        nodes_seen=lambda: len(node.view.nodes) + 1,
        bus_connected=lambda: node.bus.connected,
        share_refusals=lambda: gate.refused if (gate := app.get(SHARE_GATE)) else 0,
        handed_off=lambda: rebalancer.handed_off if (rebalancer := app[SHARING].rebalancer) else 0,
        share_limit=lambda: _share(app, node, admitted=False).limit,
    )


async def _outbox_depth(app: web.Application, last: int) -> int:
    """Notes not yet delivered; the last figure when the database does not answer."""
    try:
        async with asyncio.timeout(PROBE_WAIT_S), app[SERVICES].db() as db:
            stmt = select(func.count()).where(SessionOutbox.state == "pending")
            return int((await db.execute(stmt)).scalar_one())
    except (TimeoutError, OperationalError, DBAPIError, OSError):
        return last


async def _probe_ctx(app: web.Application) -> AsyncIterator[None]:
    probe = DatabaseProbe(app[SERVICES].engine)
    app[DATABASE_PROBE] = probe
    try:
        yield
    finally:
        await probe.close()


async def _readyz(request: web.Request) -> web.Response:
    """200 when this node should get new connections: database and bus both up. The
    database is asked on the probe's own connection: a pool held by a herd of agent
    lookups is busy, not down (broker.cluster.readiness)."""
    services = request.app[SERVICES]
    node = request.app.get(CLUSTER)
    database = "up" if await request.app[DATABASE_PROBE].database_up() else "down"
    bus = "up" if node is not None and node.bus.connected else "down"
    # A draining node is healthy but should get nothing new: the load balancer takes it out.
    ready = database == "up" and bus == "up" and not services.draining
    body: dict[str, object] = {
        "status": "ready" if ready else ("draining" if services.draining else "unavailable"),
        "node": node.name if node is not None else "",
        "database": database,
        "bus": bus,
        "draining": services.draining,
    }
    return web.json_response(body, status=200 if ready else 503)
