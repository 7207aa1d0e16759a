"""What this node does when the cluster asks it (:class:`~broker.cluster.node.LocalActions`):
say what it holds, kill a session, revoke an agent, end a disabled account's sessions,
forget a dead node, drain, steer a session; and starting a drain, which the API asks too."""

from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy import select

from broker.agents import agent_store
from broker.agents.feature import AGENT_REGISTRY
from broker.agents.tunnel_endpoint import TUNNEL_RUNTIME
from broker.cluster.app_keys import CLUSTER, CLUSTER_TASKS, SINGLE
from broker.cluster.drain import Drainer, DrainHooks
from broker.cluster.messages import Control, Steer, SteerResult
from broker.cluster.node import LocalActions
from broker.cluster.sharing import SHARING, busy_agents
from broker.db.models_agents import Agent
from broker.db.models_sessions import RemoteSession
from broker.services import SERVICES
from broker.sessions.hub_core import HubClosed, HubRefused, roles_of
from broker.sessions.runtime import SESSIONS
from broker.sessions.store import LIVE_STATES

log = logging.getLogger(__name__)


def local_actions(app: web.Application) -> LocalActions:
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
        return busy_agents(app)

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
