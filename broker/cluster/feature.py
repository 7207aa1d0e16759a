"""The cluster feature of the broker app: the bus, this node's presence and control, and
the operations endpoints (``/readyz``, ``/metrics``).

A single node runs the same code on an :class:`InProcessBus` (nothing leaves the process,
no NATS needed); a node with ``[cluster] nats_url`` runs on NATS. Its context comes first
of the features, so a node whose name is taken refuses to start before it touches any
state of the cluster.

The parts: the app's handles on the node (broker.cluster.app_keys), what the node does when
the cluster asks (broker.cluster.node_actions), its share of the agents
(broker.cluster.sharing) and the operations endpoints (broker.cluster.ops_endpoints).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.cluster import peering
from broker.cluster.app_keys import CLUSTER, CLUSTER_TASKS, SINGLE
from broker.cluster.bus import Bus, InProcessBus
from broker.cluster.health import metrics_registry
from broker.cluster.lease import NodeLeases
from broker.cluster.nats_bus import NatsBus
from broker.cluster.node import ClusterNode
from broker.cluster.node_actions import local_actions
from broker.cluster.ops_endpoints import (
    METRICS,
    Metrics,
    database_probe_ctx,
    metrics_handler,
    node_figures,
    readyz_handler,
)
from broker.cluster.peer_client import PeerRouter
from broker.cluster.peer_server import PEER_STATE, PeerState, close_peer_sockets, peer_socket
from broker.cluster.sharing import SHARING, Sharing, start_sharing, tell_connected
from broker.config import peer_url
from broker.services import SERVICES
from broker.sessions.runtime import SESSION_ROUTER
from broker.supervision import Supervisor

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    app[SHARING] = Sharing()
    app.cleanup_ctx.append(database_probe_ctx)
    app.cleanup_ctx.append(_cluster_ctx)
    # on_startup runs after every feature's context has started: the node serves now.
    app.on_startup.append(_serving)
    app.router.add_get("/readyz", readyz_handler)
    app.router.add_get("/metrics", metrics_handler)
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
        local_actions(app),
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
        start_sharing(app, node, tasks)
        tell_connected(app, node, tasks)
    figures = node_figures(app, node)
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
