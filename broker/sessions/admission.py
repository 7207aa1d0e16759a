"""Who may open which session, and who may join or watch a live one: the staff member,
the ticket and the agent judged by the session rules (``broker.rules``), in an order that
never tells out-of-scope staff about a ticket, plus the per-staff session limit. Every
refusal is audited."""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from broker.ports import AgentTunnels, TicketSystem
from broker.rules import (
    Allowed,
    LiveSessionView,
    Refused,
    SshTarget,
    StaffView,
    may_join_session,
    may_observe_session,
    may_open_session,
    may_view_ticket,
    sanitize_display_text,
)
from broker.services import Services
from broker.sessions import store
from broker.sessions.access import choose_agent, find_agents, load_agents, load_staff
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    DB_ERRORS,
    SessionNotFound,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.facts import Kind, SessionFacts
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import Role

log = logging.getLogger(__name__)

_ID_ALPHABET: Final = string.ascii_letters + string.digits


def new_session_id() -> str:
    """An unguessable session id: ``s-`` and 22 letters or digits (about 131 bits)."""
    return "s-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


@dataclass(frozen=True, kw_only=True)
class OpenRequest:
    """A staff member asks for a shell or a command on a ticket's agent."""

    staff: str
    target: SshTarget
    kind: Kind
    command: str | None
    term: str | None  # None: no PTY
    cols: int = 80
    rows: int = 24
    via: Literal["ssh", "web"]
    source: str


@dataclass(frozen=True)
class Admitted:
    """A session the rules allow, before anything of it exists."""

    facts: SessionFacts
    decision: Allowed
    ticket_status: str
    tickets: TicketSystem


async def refuse(
    services: Services,
    req: OpenRequest,
    refused: Refused,
    *,
    target: str,
    status: int | None = None,
) -> SessionRefused:
    details: dict[str, object] = {
        "code": refused.code,
        "reason": refused.reason[:300],
        "ticket": f"T-{req.target.ticket}",
        "via": req.via,
    }
    try:
        await services.audit.record(
            actor=req.staff,
            action="session.refused",
            target=target,
            outcome="denied",
            source=req.source,
            details=details,
        )
    except DB_ERRORS:
        return StoreUnavailable(AUDIT_STORE_UNAVAILABLE)
    return SessionRefused(refused.reason, code=refused.code, status=status)


async def admit(
    services: Services,
    req: OpenRequest,
    tickets: TicketSystem | None,
    tunnels: AgentTunnels | None,
    elsewhere: Callable[[str], str | None] | None = None,
) -> Admitted:
    """Judge ``req``; raises SessionRefused (audited) or StoreUnavailable. ``elsewhere``
    names the other node holding an agent's tunnel (a cluster), which counts as online:
    the manager then routes the session there, where it is judged again."""
    target = str(req.target)
    if services.draining:
        raise await refuse(services, req, _DRAINING, target=target, status=503)
    if tickets is None:
        raise await refuse(services, req, _NO_TICKETS, target=target, status=503)
    now = services.clock()
    try:
        async with services.db() as db:
            staff = await load_staff(db, req.staff)
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    if staff is None:
        raise await refuse(services, req, _NO_ACCOUNT, target=target)
    try:
        ticket = await tickets.get(req.target.ticket)
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    except Exception:  # an outside system: whatever it raises refuses this one session
        log.exception(
            "the ticket system failed reading T-%s for %s (%s)",
            req.target.ticket,
            req.staff,
            req.source,
        )
        raise await refuse(services, req, _NO_TICKETS, target=target, status=503) from None
    if ticket is None:
        missing = Refused(
            "ticket_not_found",
            f"there is no ticket T-{req.target.ticket}; check the number (secondline ticket list)",
        )
        raise await refuse(services, req, missing, target=target, status=404)
    seen = may_view_ticket(staff, ticket.view())
    if isinstance(seen, Refused):
        raise await refuse(services, req, seen, target=target)
    try:
        async with services.db() as db:
            linked = await load_agents(db, ticket.agent_ids)
            named = (
                await find_agents(db, req.target.agent, ticket.customer)
                if req.target.agent is not None
                else None
            )
            running = await store.count_live(db, staff.name)
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    chosen = choose_agent(ticket, linked, named)
    if isinstance(chosen, Refused):
        raise await refuse(services, req, chosen, target=target)
    agent = chosen
    decision = may_open_session(staff, ticket.view(), agent.view(tunnels, elsewhere), now)
    if isinstance(decision, Refused):
        raise await refuse(services, req, decision, target=target)
    limit = services.config.max_sessions_per_staff
    if running >= limit:
        too_many = Refused(
            "session_limit",
            f"you have {running} sessions open and the limit is {limit}; "
            "end one before opening another",
        )
        raise await refuse(services, req, too_many, target=target, status=429)
    level = staff.level or 0
    facts = SessionFacts(
        session_id=new_session_id(),
        ticket_id=ticket.id,
        ticket_title=sanitize_display_text(ticket.title, 200),
        customer=ticket.customer,
        agent_id=agent.id,
        agent_name=agent.name,
        owner=staff.name,
        owner_level=level,
        kind=req.kind,
        command=req.command,
        via=req.via,
        source=req.source,
        term=req.term,
        cols=max(1, min(req.cols, 1000)),
        rows=max(1, min(req.rows, 1000)),
    )
    return Admitted(facts, decision, ticket.status, tickets)


@dataclass(frozen=True, kw_only=True)
class JoinRequest:
    """A staff member asks to join (type in) or observe (watch) a live session."""

    staff: str
    session_id: str
    ticket_id: int
    role: Role  # joiner or observer
    source: str

    @property
    def action(self) -> str:
        """What the audit log calls it."""
        return "session.join" if self.role == "joiner" else "session.observe"


async def admit_member(
    services: Services,
    req: JoinRequest,
    live: LiveSession | None,
    tickets: TicketSystem | None,
    tunnels: AgentTunnels | None,
) -> tuple[StaffView, Allowed]:
    """Judge ``req`` against ``live`` (None: not running on this node); raises
    SessionNotFound or SessionRefused (audited), or StoreUnavailable."""
    try:
        async with services.db() as db:
            staff = await load_staff(db, req.staff)
            agents = await load_agents(db, [live.facts.agent_id]) if live else []
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    ticket = await tickets.get(req.ticket_id) if tickets is not None else None
    if live is None or staff is None or ticket is None or not agents or not live.running:
        await audit_member_refusal(services, req, "not_live")
        raise SessionNotFound(
            f"there is no live session {req.session_id} on ticket T-{req.ticket_id}; "
            "see the ticket's sessions"
        )
    view = LiveSessionView(
        id=req.session_id,
        ticket=live.facts.ticket_id,
        owner=live.facts.owner,
        invited=live.core.invited,
    )
    now = services.clock()
    agent = agents[0].view(tunnels)
    if req.role == "joiner":
        decision = may_join_session(staff, ticket.view(), view, agent, now)
    else:
        attended = agent.consent == "attended"
        decision = may_observe_session(staff, ticket.view(), view, now, attended=attended)
    if isinstance(decision, Refused):
        await audit_member_refusal(services, req, decision.code)
        raise SessionRefused(decision.reason, code=decision.code)
    if live.facts.kind == "sftp":
        # Its stream is SFTP packets, not a screen; what it does is in its transcript.
        await audit_member_refusal(services, req, "file_session")
        raise SessionRefused(
            f"session {req.session_id} moves files and has no screen to join or watch; "
            "its file operations are in its transcript",
            code="file_session",
        )
    return staff, decision


async def audit_member_refusal(services: Services, req: JoinRequest, code: str) -> None:
    try:
        await services.audit.record(
            actor=req.staff,
            action=req.action,
            target=req.session_id,
            outcome="denied",
            source=req.source,
            details={"code": code},
        )
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None


_NO_TICKETS: Final = Refused(
    "ticket_system_unavailable",
    "the ticket system is unavailable, and every session needs its ticket; try again shortly",
)
_DRAINING: Final = Refused(
    "node_draining",
    "this broker node is draining (it is about to be stopped) and opens no new sessions; "
    "connect again: the load balancer sends you to another node",
)
_NO_ACCOUNT: Final = Refused("staff_unknown", "your account does not exist any more; ask an admin")
