"""Joining (type) or observing (watch) a live session of this node, as
``SessionManager.attach`` does for this node's ways in and for a join relayed from another
node (``broker.cluster.peer_server``): the member rules (``admission``), the end user asked
about the joiner by name (attended agents, ``consent``), the join audited, and only then the
terminal attached to the hub."""

from __future__ import annotations

from collections.abc import Callable

from broker.ports import AgentTunnels, TicketSystem
from broker.services import Services
from broker.sessions.admission import JoinRequest, admit_member
from broker.sessions.consent import ASKED_ROLE, ConsentGrant, Grants, ask_consent
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    DB_ERRORS,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.facts import Terminal
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import HubClosed, HubFull, Member
from broker.sessions.opening import session_env


async def join(
    services: Services,
    req: JoinRequest,
    live: LiveSession | None,
    terminal: Terminal,
    *,
    tickets: Callable[[], TicketSystem | None],
    tunnels: Callable[[], AgentTunnels | None],
    grants: Grants,
) -> tuple[LiveSession, Member]:
    """Attach ``terminal`` to ``live`` (the session ``req`` names, None when it is not
    live here) as ``req`` asks; raises SessionRefused (audited). An approval the end user
    gave is kept in ``grants`` for as long as the member stays."""
    staff, decision = await admit_member(services, req, live, tickets(), tunnels())
    assert live is not None  # admit_member refuses a session that is not live here
    env = session_env(live.facts, staff.name, staff.level or 0, ASKED_ROLE[req.role])
    grant: ConsentGrant | None = None
    if decision.needs_consent:
        agents = tunnels()
        conn = agents.connection(live.facts.agent_id) if agents is not None else None
        if conn is None:
            raise SessionRefused("the agent is offline", code="agent_offline")
        terminal.show_state(
            "waiting_consent", "waiting for the end user's approval", req.session_id
        )
        # Every joiner and observer is asked about by name: nobody rides on the owner's
        # approval. A refusal is audited and marked in the transcript.
        grant = await ask_consent(services, conn, env, source=req.source, marker=live.marker)
    try:
        member = await _admit_member(services, live, staff.name, req, terminal)
    except BaseException:
        if grant is not None:
            grant.close()
        raise
    if grant is not None:
        grants.keep(live, member, env, grant, req.source)
    return live, member


async def _admit_member(
    services: Services, live: LiveSession, name: str, req: JoinRequest, terminal: Terminal
) -> Member:
    """Audit the join, then attach: a join the audit log cannot take does not happen."""
    try:
        await services.audit.record(
            actor=name,
            action=req.action,
            target=live.session_id,
            outcome="ok",
            source=req.source,
            details={"ticket": live.facts.ticket_ref},
        )
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    try:
        return live.attach(terminal, name, req.role, "web")
    except (HubClosed, HubFull) as exc:
        raise SessionRefused(f"you cannot attach: {exc}", code="session_full") from None
