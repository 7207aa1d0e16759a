"""The API's side of control across nodes: a kill, revoke or disable issued on this node
reaches the node that holds the session or the tunnel (docs/cluster.md). Each node acts
with its own local calls; this module only asks, and turns a node that cannot be reached
into an error that says so."""

from __future__ import annotations

import logging

from aiohttp import web

from broker.cluster.app_keys import CLUSTER
from broker.cluster.bus import BusUnavailable, NoResponder
from broker.cluster.messages import BadMessage, Steer, SteerResult
from broker.db.models_sessions import RemoteSession
from broker.sessions.errors import SessionConflict

log = logging.getLogger(__name__)


async def kill_elsewhere(
    app: web.Application, row: RemoteSession, *, by: str, source: str, reason: str
) -> bool:
    """Ask the node recorded as running ``row`` to end it; False when no other node runs it
    (a single node, or a session of this node). Raises SessionConflict with the reason
    when that node cannot be reached."""
    node = app.get(CLUSTER)
    if node is None or not row.node or row.node == node.name:
        return False
    try:
        return await node.kill_on(row.node, row.id, by=by, source=source, reason=reason)
    except NoResponder:
        raise SessionConflict(
            f"session {row.id} runs on node {row.node}, which is not in the cluster now; if "
            "that node died, another node seals the session as interrupted within 10 s of its "
            "last heartbeat"
        ) from None
    except TimeoutError:
        raise SessionConflict(
            f"node {row.node}, which runs session {row.id}, did not answer in time; try again"
        ) from None
    except BusUnavailable:
        raise SessionConflict(
            f"session {row.id} runs on node {row.node}, and this node has lost the cluster "
            "bus (NATS); try again shortly, or on another node"
        ) from None


async def steer_elsewhere(
    app: web.Application, row: RemoteSession, kind: str, *, by: str, name: str
) -> SteerResult | None:
    """Ask the node recorded as running ``row`` to invite or hand over (its hub holds who
    is present and who is invited); None when no other node runs it. Raises
    SessionConflict with the reason when that node cannot be reached."""
    node = app.get(CLUSTER)
    if node is None or not row.node or row.node == node.name or row.ended_at is not None:
        return None
    steer = Steer(kind=kind, session=row.id, by=by, name=name)
    try:
        return await node.steer_on(row.node, steer)
    except NoResponder:
        raise SessionConflict(
            f"session {row.id} runs on node {row.node}, which is not in the cluster now"
        ) from None
    except (TimeoutError, BadMessage):
        raise SessionConflict(
            f"node {row.node}, which runs session {row.id}, did not answer in time; try again"
        ) from None
    except BusUnavailable:
        raise SessionConflict(
            f"session {row.id} runs on node {row.node}, and this node has lost the cluster "
            "bus (NATS); try again shortly, or on another node"
        ) from None


async def tell_nodes(app: web.Application, kind: str, target: str, *, by: str, source: str) -> None:
    """Tell every other node to act on a revoke or disable (this node has acted already).
    Stored data is the record: with the bus away, the other nodes' periodic checks and
    the agents' next connection still see it, so this only logs."""
    node = app.get(CLUSTER)
    if node is None:
        return
    try:
        await node.broadcast(kind, target, by=by, source=source)
    except BusUnavailable:
        log.warning("%s of %s not sent to the other nodes: the cluster bus is away", kind, target)
