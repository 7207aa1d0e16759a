"""Opening or joining a session on whichever node runs it (docs/cluster.md, "Sessions
across nodes"): here, through the :class:`~broker.sessions.manager.SessionManager`, or on
the node that holds the agent's tunnel, through the cluster's
:class:`~broker.sessions.routing.SessionRouter`, whose hub this node then relays. The ways
in of this node (the SSH gateway, the browser terminal and its file transfers) call these;
a node asked by a peer uses the manager's own ``open`` / ``attach``
(``broker.cluster.peer_server``), so a request crosses at most one node."""

from __future__ import annotations

import logging

from broker.rules import Refused
from broker.sessions import store
from broker.sessions.admission import (
    JoinRequest,
    OpenRequest,
    admit,
    audit_member_refusal,
    refuse,
)
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    DB_ERRORS,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.facts import Terminal
from broker.sessions.hub_core import Member, Role
from broker.sessions.manager import SessionManager
from broker.sessions.routing import RouteFailed, SessionHandle

log = logging.getLogger(__name__)


async def open_anywhere(
    manager: SessionManager, req: OpenRequest, owner: Terminal
) -> tuple[SessionHandle, Member]:
    """Start a session with ``owner`` attached, on the node that holds the agent's
    tunnel: here, or (in a cluster) the node the cluster names, whose hub this node
    relays. Raises SessionRefused (audited where it was decided)."""
    manager.refuse_if_closing()
    tunnels, router = manager.tunnels(), manager.router()
    holder = router.holder if router is not None else None
    admitted = await admit(manager.services, req, manager.tickets(), tunnels, holder)
    agent_id = admitted.facts.agent_id
    here = tunnels is not None and tunnels.connection(agent_id) is not None
    node = router.holder(agent_id) if router is not None and not here else None
    if router is None or node is None:
        live, member = await manager.start_admitted(req, admitted, owner, tunnels)
        if router is not None:  # a cluster: say where it runs, as a routed one does
            log.info("session %s: opened on this node for %s", live.session_id, req.staff)
        return live, member
    try:
        return await router.open(node, req, owner)
    except RouteFailed as exc:
        refused = Refused(exc.code, exc.reason)
        raise await refuse(
            manager.services, req, refused, target=str(req.target), status=503
        ) from None


async def attach_anywhere(
    manager: SessionManager,
    *,
    staff_name: str,
    session_id: str,
    ticket_id: int,
    role: Role,
    terminal: Terminal,
    source: str,
) -> tuple[SessionHandle, Member]:
    """Join or observe a live session of this node, or (in a cluster) of the node the
    database names as running it, whose hub this node relays; audited."""
    router = manager.router()
    node = None
    if router is not None and session_id not in manager.live:
        node = await node_of(manager, session_id)
    if router is None or node is None:
        return await manager.attach(
            staff_name=staff_name,
            session_id=session_id,
            ticket_id=ticket_id,
            role=role,
            terminal=terminal,
            source=source,
        )
    req = JoinRequest(
        staff=staff_name, session_id=session_id, ticket_id=ticket_id, role=role, source=source
    )
    try:
        return await router.attach(node, req, terminal)
    except RouteFailed as exc:
        await audit_member_refusal(manager.services, req, exc.code)
        raise SessionRefused(exc.reason, code=exc.code, status=503) from None


async def node_of(manager: SessionManager, session_id: str) -> str | None:
    """The other node the database names as running ``session_id`` live, or None."""
    try:
        async with manager.services.db() as db:
            row = await store.get_session(db, session_id)
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    if row is None or row.ended_at is not None or not row.node or row.node == manager.node:
        return None
    return row.node
