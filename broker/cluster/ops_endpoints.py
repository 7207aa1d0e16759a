"""The node's operations endpoints: ``/readyz`` (should the load balancer send it new
connections) and ``/metrics`` (Prometheus text of the node's figures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from broker.agents.feature import AGENT_REGISTRY
from broker.agents.tunnel_endpoint import SHARE_GATE
from broker.cluster.app_keys import CLUSTER
from broker.cluster.health import NodeFigures
from broker.cluster.node import ClusterNode
from broker.cluster.readiness import PROBE_WAIT_S, DatabaseProbe
from broker.cluster.sharing import SHARING, share_now
from broker.db.models_sessions import SessionOutbox
from broker.services import SERVICES
from broker.sessions.runtime import SESSIONS

#: /readyz's look at the database, on a connection of its own (broker.cluster.readiness).
DATABASE_PROBE: Final = web.AppKey("cluster_database_probe", DatabaseProbe)


@dataclass(frozen=True)
class Metrics:
    figures: NodeFigures
    registry: CollectorRegistry


METRICS: Final = web.AppKey("cluster_metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text: the node's figures, the outbox depth read now."""
    metrics = request.app[METRICS]
    figures = metrics.figures
    figures.outbox_depth = await _outbox_depth(request.app, figures.outbox_depth)
    response = web.Response(body=generate_latest(metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def node_figures(app: web.Application, node: ClusterNode) -> NodeFigures:
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
        share_limit=lambda: share_now(app, node, admitted=False).limit,
    )


async def _outbox_depth(app: web.Application, last: int) -> int:
    """Notes not yet delivered; the last figure when the database does not answer."""
    try:
        async with asyncio.timeout(PROBE_WAIT_S), app[SERVICES].db() as db:
            stmt = select(func.count()).where(SessionOutbox.state == "pending")
            return int((await db.execute(stmt)).scalar_one())
    except (TimeoutError, OperationalError, DBAPIError, OSError):
        return last


async def database_probe_ctx(app: web.Application) -> AsyncIterator[None]:
    probe = DatabaseProbe(app[SERVICES].engine)
    app[DATABASE_PROBE] = probe
    try:
        yield
    finally:
        await probe.close()


async def readyz_handler(request: web.Request) -> web.Response:
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
