"""Conditional updates of a ticket row: the change happens only if the fields a decision
read are still as the caller saw them, otherwise :class:`TicketConflict`.

Each writing transaction starts with one of these UPDATEs, which takes SQLite's write lock
(and PostgreSQL's row lock) before anything else is read or written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_tickets import Ticket
from broker.ports import TicketInfo
from broker.tickets.errors import TicketConflict, TicketNotFound
from broker.tickets.queries import valid_number

# What decisions about assigning and level changes read, and what the rest read.
ALL_GUARDS: Final = ("status", "level", "assignee")
WORK_GUARDS: Final = ("status", "level")


def ticket_changed(seen: TicketInfo) -> TicketConflict:
    return TicketConflict(
        f"ticket {seen.ref} changed while you were working on it; look at it again "
        f"(secondline ticket show {seen.ref}) and retry",
        code="ticket_changed",
    )


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def guarded_update(
    db: AsyncSession,
    seen: TicketInfo,
    values: Mapping[str, object],
    now: dt.datetime,
    guards: Sequence[str] = ALL_GUARDS,
) -> None:
    """Update the ticket only if the guarded fields are still as ``seen``."""
    conditions: list[ColumnElement[bool]] = [Ticket.id == seen.id]
    if "status" in guards:
        conditions.append(Ticket.status == seen.status)
    if "level" in guards:
        conditions.append(Ticket.level == seen.level)
    if "assignee" in guards:
        conditions.append(
            Ticket.assignee.is_(None) if seen.assignee is None else Ticket.assignee == seen.assignee
        )
    result = await db.execute(update(Ticket).where(*conditions).values(updated_at=now, **values))
    if _rowcount(result) != 1:
        raise ticket_changed(seen)


async def touch(db: AsyncSession, ticket_id: int, now: dt.datetime) -> None:
    """Mark the ticket as updated (and lock it), whatever its state; 404 if it is missing."""
    if not valid_number(ticket_id):
        raise TicketNotFound(ticket_id)
    result = await db.execute(update(Ticket).where(Ticket.id == ticket_id).values(updated_at=now))
    if _rowcount(result) != 1:
        raise TicketNotFound(ticket_id)
