"""Reading what articles are written from: the built-in ticket store's tickets, the facts of
their linked agents, and the command lists of their recorded sessions (read-only).

Also copies solved tickets into the search documents, so suggestions can offer a solved
ticket beside articles. The copy is incremental by ``updated_at`` with an overlap, so a
ticket committed a little late by another transaction is still picked up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_agents import Agent
from broker.db.models_kb import KbTicketSync
from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import Customer
from broker.db.models_tickets import Ticket, TicketAgent, TicketLevelChange
from broker.kb.article import CommandEntry
from broker.kb.drafting import MachineFacts, SessionCommands, TicketDigest
from broker.kb.search_docs import DocFields, delete_doc, upsert_doc

SOLVED_STATUSES: Final = ("resolved", "closed")
SYNC_OVERLAP: Final = dt.timedelta(minutes=5)


def _commands(session_id: str, raw: Sequence[Mapping[str, object]] | None) -> SessionCommands:
    entries: list[CommandEntry] = []
    for item in raw or ():
        if not isinstance(item, Mapping):
            continue
        line = item.get("command_line", item.get("command"))
        status = item.get("exit_status")
        if isinstance(line, str):
            entries.append(
                CommandEntry(
                    line,
                    status if isinstance(status, int) and not isinstance(status, bool) else None,
                    session_id,
                )
            )
    return SessionCommands(session_id, tuple(entries))


async def ticket_customer(db: AsyncSession, ticket_id: int) -> tuple[Ticket, str] | None:
    """The ticket row and its customer's name, or None when there is no such ticket."""
    row = (
        await db.execute(
            select(Ticket, Customer.name)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Ticket.id == ticket_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def load_ticket(db: AsyncSession, ticket_id: int) -> TicketDigest | None:
    """Everything a draft is pre-filled from, or None when the ticket does not exist."""
    found = await ticket_customer(db, ticket_id)
    if found is None:
        return None
    ticket, customer = found
    reasons = (
        await db.execute(
            select(TicketLevelChange.reason)
            .where(TicketLevelChange.ticket_id == ticket_id)
            .order_by(TicketLevelChange.at, TicketLevelChange.id)
        )
    ).scalars()
    facts = (
        await db.execute(
            select(Agent.facts)
            .join(TicketAgent, TicketAgent.agent_id == Agent.id)
            .where(TicketAgent.ticket_id == ticket_id)
            .order_by(Agent.name)
        )
    ).scalars()
    sessions = (
        await db.execute(
            select(RemoteSession.id, RemoteSession.commands)
            .where(RemoteSession.ticket_id == ticket_id)
            .order_by(RemoteSession.created_at, RemoteSession.id)
        )
    ).all()
    return TicketDigest(
        id=ticket.id,
        customer=customer,
        title=ticket.title,
        description=ticket.description,
        status=ticket.status,
        solution=ticket.solution or "",
        escalation_reasons=tuple(reasons),
        machines=tuple(MachineFacts.from_facts(f) for f in facts if isinstance(f, Mapping)),
        sessions=tuple(_commands(sid, cmds) for sid, cmds in sessions),
    )


async def sync_ticket_docs(db: AsyncSession, now: dt.datetime) -> int:
    """Bring the search documents of tickets changed since the last run up to date.

    Solved tickets are (re)indexed, others dropped (a reopened ticket is no answer yet).
    Returns how many tickets were looked at.
    """
    state = await db.get(KbTicketSync, 1)
    since = state.synced_until - SYNC_OVERLAP if state is not None else None
    query = (
        select(Ticket, Customer.name)
        .join(Customer, Customer.id == Ticket.customer_id)
        .order_by(Ticket.updated_at, Ticket.id)
    )
    if since is not None:
        query = query.where(Ticket.updated_at >= since)
    count = 0
    newest = since
    for ticket, customer in (await db.execute(query)).all():
        count += 1
        if newest is None or ticket.updated_at > newest:
            newest = ticket.updated_at
        if ticket.status not in SOLVED_STATUSES:
            await delete_doc(db, "ticket", ticket.id)
            continue
        await upsert_doc(
            db,
            "ticket",
            ticket.id,
            DocFields(
                status=ticket.status,
                customer=customer,
                title=ticket.title,
                problem=ticket.description,
                solution=ticket.solution or "",
            ),
            now,
        )
    if state is None:
        db.add(KbTicketSync(id=1, synced_until=newest or now))
    elif newest is not None and newest > state.synced_until:
        state.synced_until = newest
    return count
