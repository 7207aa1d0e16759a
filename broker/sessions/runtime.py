"""What the sessions feature keeps in the app (``app[SESSIONS]``), and where it finds the
ticket system and the agent tunnels it uses. The SSH gateway (``broker.ssh_gateway``) and
the browser terminal (``broker.web``) keep their own state: they use the sessions, not the
other way round."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from broker.agents.feature import AGENT_REGISTRY
from broker.ports import AgentTunnels, TicketSystem
from broker.sessions.manager import SessionManager
from broker.sessions.routing import SessionRouter
from broker.tickets.keys import TICKETS
from broker.tickets.outbox import OutboxWorker

# Set these before the app starts to use another ticket system or tunnel registry than the
# built-in ones (an outside connector, or a test's stand-in agent); otherwise the sessions
# use app[broker.tickets.TICKETS] and app[broker.agents.feature.AGENT_REGISTRY].
TICKET_SYSTEM: Final[web.AppKey[TicketSystem]] = web.AppKey("sessions_ticket_system")
AGENT_TUNNELS: Final[web.AppKey[AgentTunnels]] = web.AppKey("sessions_agent_tunnels")
# Set by the cluster feature on a cluster node: how sessions reach hubs on other nodes.
SESSION_ROUTER: Final[web.AppKey[SessionRouter]] = web.AppKey("sessions_router")


@dataclass
class SessionsRuntime:
    """The running session machinery of one broker process."""

    manager: SessionManager
    outbox: OutboxWorker


SESSIONS: Final = web.AppKey("sessions", SessionsRuntime)


def ticket_system(app: web.Application) -> TicketSystem | None:
    """The ticket system sessions write to, looked up when needed (a connector may put
    its own in place while the app starts)."""
    given = app.get(TICKET_SYSTEM)
    if given is not None:
        return given
    return app.get(TICKETS)


def agent_tunnels(app: web.Application) -> AgentTunnels | None:
    """The live agent connections of this node, looked up when needed."""
    given = app.get(AGENT_TUNNELS)
    if given is not None:
        return given
    return app.get(AGENT_REGISTRY)
