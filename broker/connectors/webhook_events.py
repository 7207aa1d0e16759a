"""The events the webhook connector sends, and how each is queued exactly once.

An event is a row of ``connector_outbox`` of kind ``event``: its type in ``value``, its JSON
body in ``text``, its id in ``key``. The row is written in the transaction of what it
reports (a ticket change through ``outbound.change_hook``, a session going live through
:func:`session_started_hook`, a session's note through ``tickets.ConnectedTickets``), so a
committed change is always told and a refused one never is. The sync task sends the rows
(``outbound.Outbound``), each try with the same body and id and a fresh signature, until
the receiver answers 2xx (or 409, "had it already"); the receiver dedupes on ``id``.

The body (``docs/connectors.md`` shows one of each type)::

    {"id": "...", "type": "ticket.escalated", "created": "2026-...Z", "connector": "wh-acme",
     "ticket": {"ref": "T-1002", "external_id": "4711", "external_ref": "WH-4711"},
     "data": {...}}
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_connectors import Connector, ConnectorOutbox, ExternalTicket
from broker.db.models_tickets import TicketAttachment, TicketNote
from broker.rules import LevelChange
from broker.sessions.facts import SessionFacts
from broker.tickets.files import download_url
from broker.tickets.records import Assigned, MachineLinked, StatusChanged

EVENT_KIND: Final = "event"
WEBHOOK_KIND: Final = "webhook"
SESSION_STARTED: Final = "session.started"
SESSION_ENDED: Final = "session.ended"
ESCALATED: Final = "ticket.escalated"
HANDED_BACK: Final = "ticket.handed_back"
ASSIGNED: Final = "ticket.assigned"
STATUS_CHANGED: Final = "ticket.status_changed"
MACHINE_LINKED: Final = "ticket.machine_linked"
SESSION_KEY_PREFIX: Final = "secondline-session-start:"


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def event_body(
    *,
    event_id: str,
    event_type: str,
    created: dt.datetime,
    connector: str,
    ticket_id: int,
    external_ref: str,
    external_id: str,
    data: Mapping[str, object],
) -> str:
    """The JSON the receiver gets; fixed when queued, so every try sends the same bytes."""
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created": iso(created),
            "connector": connector,
            "ticket": {
                "ref": f"T-{ticket_id}",
                "external_id": external_id,
                "external_ref": external_ref,
            },
            "data": dict(data),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def change_event(change: object, actor: str) -> tuple[str, dict[str, object]]:
    """The type and data of the event telling a ticket change made in Secondline."""
    if isinstance(change, LevelChange):
        kind = ESCALATED if change.kind == "escalate" else HANDED_BACK
        data: dict[str, object] = {
            "from_level": change.from_level,
            "to_level": change.to_level,
            "reason": change.reason,
            "by": actor,
        }
        return kind, data
    if isinstance(change, Assigned):
        return ASSIGNED, {"assignee": change.assignee, "by": actor}
    if isinstance(change, StatusChanged):
        data = {"action": change.action, "status": change.status, "by": actor}
        if change.solution:
            data["solution"] = change.solution
        return STATUS_CHANGED, data
    if isinstance(change, MachineLinked):
        return MACHINE_LINKED, {
            "agent": change.agent_name,
            "agent_id": change.agent_id,
            "by": actor,
        }
    raise TypeError(f"no event for {type(change).__name__}")


def queue_event(
    db: AsyncSession,
    *,
    link: ExternalTicket,
    connector: str,
    prefix: str,
    key: str,
    event_type: str,
    data: Mapping[str, object],
    now: dt.datetime,
) -> None:
    """Add the event's row to the transaction ``db`` is in."""
    external_id = link.merged_into or link.external_id
    db.add(
        ConnectorOutbox(
            connector_id=link.connector_id,
            ticket_id=link.ticket_id,
            external_id=external_id,
            key=key,
            kind=EVENT_KIND,
            value=event_type,
            text=event_body(
                event_id=key,
                event_type=event_type,
                created=now,
                connector=connector,
                ticket_id=link.ticket_id,
                external_ref=f"{prefix}-{external_id}",
                external_id=external_id,
                data=data,
            ),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


async def webhook_link(db: AsyncSession, ticket_id: int) -> tuple[ExternalTicket, str, str] | None:
    """The ticket's link, connector name and prefix, when a webhook connector mirrors it."""
    found = (
        await db.execute(
            select(ExternalTicket, Connector.name, Connector.prefix)
            .join(Connector, Connector.id == ExternalTicket.connector_id)
            .where(ExternalTicket.ticket_id == ticket_id, Connector.kind == WEBHOOK_KIND)
        )
    ).one_or_none()
    return None if found is None else (found[0], found[1], found[2])


async def session_started_hook(db: AsyncSession, facts: SessionFacts, now: dt.datetime) -> None:
    """A session went live on a ticket: tell its webhook (a
    ``broker.sessions.hooks.SessionStartHook``)."""
    found = await webhook_link(db, facts.ticket_id)
    if found is None:
        return
    link, connector, prefix = found
    queue_event(
        db,
        link=link,
        connector=connector,
        prefix=prefix,
        key=f"{SESSION_KEY_PREFIX}{facts.session_id}",
        event_type=SESSION_STARTED,
        data={
            "session": facts.session_id,
            "staff": facts.owner,
            "agent": facts.agent_name,
            "agent_id": facts.agent_id,
            "kind": facts.kind,
            "via": facts.via,
            "started_at": iso(now),
        },
        now=now,
    )


async def note_attachments(
    db: AsyncSession, ticket_id: int, key: str, public_url: str
) -> list[dict[str, object]]:
    """The stored attachments of the note with ``key``, with the links to fetch them."""
    rows = (
        await db.execute(
            select(TicketAttachment)
            .join(TicketNote, TicketNote.id == TicketAttachment.note_id)
            .where(TicketNote.ticket_id == ticket_id, TicketNote.idempotency_key == key)
            .order_by(TicketAttachment.name)
        )
    ).scalars()
    return [
        {
            "name": row.name,
            "content_type": row.content_type,
            "size": row.size,
            "sha256": row.sha256,
            "url": public_url.rstrip("/") + download_url(f"T-{ticket_id}", row.name),
        }
        for row in rows
    ]


def session_ended_data(
    key: str, author: str, text: str, attachments: Sequence[Mapping[str, object]]
) -> dict[str, object]:
    _, _, session = key.partition(":")
    return {
        "session": session,
        "author": author,
        "note": text,
        # Each with its link; fetching it needs a Secondline API token that may read the
        # ticket (docs/connectors.md).
        "attachments": list(attachments),
    }


async def queue_session_ended(
    db: AsyncSession,
    *,
    ticket_id: int,
    key: str,
    author: str,
    text: str,
    public_url: str,
    now: dt.datetime,
) -> bool:
    """Queue the event carrying a session's note (stored in the built-in store already, so
    its attachment links work); False when it is queued already or no webhook mirrors the
    ticket. The note's key is the event's id, so a retried note is one event."""
    found = await webhook_link(db, ticket_id)
    if found is None:
        return False
    if await db.scalar(select(ConnectorOutbox.id).where(ConnectorOutbox.key == key)):
        return False
    link, connector, prefix = found
    attachments = await note_attachments(db, ticket_id, key, public_url)
    queue_event(
        db,
        link=link,
        connector=connector,
        prefix=prefix,
        key=key,
        event_type=SESSION_ENDED,
        data=session_ended_data(key, author, text, attachments),
        now=now,
    )
    return True
