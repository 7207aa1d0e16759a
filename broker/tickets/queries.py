"""Reading tickets: one ticket as the rules see it, lists, and everything ``show`` prints."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_agents import Agent
from broker.db.models_connectors import Connector, ExternalTicket
from broker.db.models_staff import Customer
from broker.db.models_tickets import (
    Ticket,
    TicketAgent,
    TicketAttachment,
    TicketLevelChange,
    TicketNote,
)
from broker.ports import TicketInfo
from broker.rules import TICKET_ID_MAX, LevelChangeKind
from broker.tickets.records import (
    AttachmentRecord,
    ExternalRef,
    LevelChangeRecord,
    LinkedAgent,
    NoteRecord,
    TicketDetail,
    TicketFilter,
    TicketSummary,
)


def valid_number(ticket_id: int) -> bool:
    return not isinstance(ticket_id, bool) and 1 <= ticket_id <= TICKET_ID_MAX


def to_info(row: Ticket, customer: str, agent_ids: frozenset[str]) -> TicketInfo:
    return TicketInfo(
        id=row.id,
        title=row.title,
        status=row.status,
        level=row.level,
        customer=customer,
        assignee=row.assignee,
        agent_ids=agent_ids,
        created_by=row.created_by,
    )


def _with_customer() -> Select[Ticket, str]:
    return select(Ticket, Customer.name).join(Customer, Customer.id == Ticket.customer_id)


async def ticket_row(db: AsyncSession, ticket_id: int) -> tuple[Ticket, str] | None:
    if not valid_number(ticket_id):
        return None
    row = (await db.execute(_with_customer().where(Ticket.id == ticket_id))).one_or_none()
    return None if row is None else (row[0], row[1])


async def linked_agents(
    db: AsyncSession, ticket_ids: Sequence[int]
) -> dict[int, list[tuple[str, str]]]:
    """The (id, name) of the agents linked to each ticket, in the order they were linked."""
    found: dict[int, list[tuple[str, str]]] = defaultdict(list)
    if not ticket_ids:
        return found
    rows = await db.execute(
        select(TicketAgent.ticket_id, Agent.id, Agent.name)
        .join(Agent, Agent.id == TicketAgent.agent_id)
        .where(TicketAgent.ticket_id.in_(ticket_ids))
        .order_by(TicketAgent.linked_at, Agent.name)
    )
    for ticket_id, agent_id, name in rows:
        found[ticket_id].append((agent_id, name))
    return found


async def ticket_info(db: AsyncSession, ticket_id: int) -> TicketInfo | None:
    found = await ticket_row(db, ticket_id)
    if found is None:
        return None
    agents = (
        (await db.execute(select(TicketAgent.agent_id).where(TicketAgent.ticket_id == ticket_id)))
        .scalars()
        .all()
    )
    return to_info(found[0], found[1], frozenset(agents))


def _summary(row: Ticket, customer: str, agents: Sequence[tuple[str, str]]) -> TicketSummary:
    return TicketSummary(
        info=to_info(row, customer, frozenset(agent_id for agent_id, _ in agents)),
        requester=row.requester,
        agent_names=tuple(name for _, name in agents),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def ticket_summary(db: AsyncSession, ticket_id: int) -> TicketSummary | None:
    found = await ticket_row(db, ticket_id)
    if found is None:
        return None
    agents = await linked_agents(db, [ticket_id])
    return _summary(found[0], found[1], agents[ticket_id])


async def list_tickets(db: AsyncSession, flt: TicketFilter) -> list[TicketSummary]:
    query = _with_customer()
    if flt.customers is not None:
        query = query.where(Customer.name.in_(sorted(flt.customers)))
    if flt.customer is not None:
        query = query.where(Customer.name == flt.customer)
    if flt.level is not None:
        query = query.where(Ticket.level == flt.level)
    if flt.status is not None:
        query = query.where(Ticket.status == flt.status)
    if flt.assignee is not None:
        query = query.where(Ticket.assignee == flt.assignee)
    rows = (await db.execute(query.order_by(Ticket.id.desc()).limit(flt.limit))).all()
    agents = await linked_agents(db, [row.id for row, _ in rows])
    return [_summary(row, customer, agents[row.id]) for row, customer in rows]


async def help_requests_since(db: AsyncSession, agent_id: str, since: dt.datetime) -> int:
    count = await db.scalar(
        select(func.count())
        .select_from(Ticket)
        .where(Ticket.origin_agent_id == agent_id, Ticket.created_at > since)
    )
    return int(count or 0)


async def attachment_row(db: AsyncSession, ticket_id: int, name: str) -> TicketAttachment | None:
    return (
        await db.execute(
            select(TicketAttachment).where(
                TicketAttachment.ticket_id == ticket_id, TicketAttachment.name == name
            )
        )
    ).scalar_one_or_none()


def attachment_record(row: TicketAttachment) -> AttachmentRecord:
    return AttachmentRecord(
        name=row.name,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        created_by=row.created_by,
        created_at=row.created_at,
        note_id=row.note_id,
    )


def _kind(text: str) -> LevelChangeKind:
    return "hand_back" if text == "hand_back" else "escalate"


async def ticket_detail(db: AsyncSession, ticket_id: int) -> TicketDetail | None:
    found = await ticket_row(db, ticket_id)
    if found is None:
        return None
    row, customer = found
    links = await db.execute(
        select(TicketAgent, Agent)
        .join(Agent, Agent.id == TicketAgent.agent_id)
        .where(TicketAgent.ticket_id == ticket_id)
        .order_by(TicketAgent.linked_at, Agent.name)
    )
    agents = [
        LinkedAgent(
            id=agent.id,
            name=agent.name,
            online=agent.online,
            revoked=agent.revoked_at is not None,
            linked_by=link.linked_by,
            linked_at=link.linked_at,
        )
        for link, agent in links
    ]
    files = (
        (
            await db.execute(
                select(TicketAttachment)
                .where(TicketAttachment.ticket_id == ticket_id)
                .order_by(TicketAttachment.id)
            )
        )
        .scalars()
        .all()
    )
    by_note: dict[int, list[str]] = defaultdict(list)
    for f in files:
        if f.note_id is not None:
            by_note[f.note_id].append(f.name)
    notes = (
        (
            await db.execute(
                select(TicketNote).where(TicketNote.ticket_id == ticket_id).order_by(TicketNote.id)
            )
        )
        .scalars()
        .all()
    )
    changes = (
        (
            await db.execute(
                select(TicketLevelChange)
                .where(TicketLevelChange.ticket_id == ticket_id)
                .order_by(TicketLevelChange.id)
            )
        )
        .scalars()
        .all()
    )
    original = (
        await db.execute(
            select(Connector.prefix, ExternalTicket.external_id, ExternalTicket.url)
            .join(Connector, Connector.id == ExternalTicket.connector_id)
            .where(ExternalTicket.ticket_id == ticket_id)
        )
    ).one_or_none()
    return TicketDetail(
        external=None
        if original is None
        else ExternalRef(ref=f"{original[0]}-{original[1]}", url=original[2]),
        summary=_summary(row, customer, [(a.id, a.name) for a in agents]),
        description=row.description,
        solution=row.solution,
        resolved_at=row.resolved_at,
        closed_at=row.closed_at,
        origin_agent_id=row.origin_agent_id,
        agents=tuple(agents),
        notes=tuple(
            NoteRecord(
                id=n.id,
                author=n.author,
                text=n.text,
                internal=n.internal,
                created_at=n.created_at,
                attachments=tuple(by_note.get(n.id, ())),
            )
            for n in notes
        ),
        history=tuple(
            LevelChangeRecord(
                kind=_kind(c.kind),
                from_level=c.from_level,
                to_level=c.to_level,
                reason=c.reason,
                actor=c.actor,
                at=c.at,
            )
            for c in changes
        ),
        attachments=tuple(attachment_record(f) for f in files),
    )
