"""Tickets of an external system, mirrored into the built-in store so the session rules see
them like any other ticket.

A mirrored ticket is an ordinary row of ``tickets`` (``T-<n>``) plus an ``external_tickets``
row: its connector, its number there, a link, and the external values last seen. A sync
applies only what changed *over there* since then, so a change made in Secondline (an
assignment, a session's note) is not undone by the next read of a ticket whose external
values did not move. Outside text (titles, requesters, custom-field values) is cleaned like
all outside text before it is stored.

- A ticket in a mapped place that we do not know yet is created (at that place's level).
- A move between mapped places is an escalation or hand-back, with a reason naming who moved
  it there, in the ticket's level history and the audit log.
- A status change is taken over (the external system is the source of truth).
- A ticket deleted or merged there is closed here; a merged one keeps the number it was
  merged into, where its notes go from then on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors.remote import RemoteTicket
from broker.connectors.store import ConnectorRecord
from broker.db.models_connectors import Connector, ExternalTicket
from broker.db.models_staff import Customer, User
from broker.db.models_tickets import Ticket
from broker.rules import InvalidName, LevelChange, parse_user_name, sanitize_display_text
from broker.services import Services
from broker.tickets import TicketStore
from broker.tickets.records import NewTicket
from broker.tickets.text import REQUESTER_MAX, TITLE_MAX

log = logging.getLogger(__name__)

URL_MAX: Final = 500
PLACE_MAX: Final = 200
STATE_MAX: Final = 32
NO_TITLE: Final = "(no subject)"
GONE: Final = "gone"
# Tells a ticket's live sessions, on every node: (our ticket number, what to tell them).
GoneHook = Callable[[int, str], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class MirrorLink:
    """Where a mirrored ticket comes from."""

    ticket_id: int
    connector: str
    prefix: str
    external_id: str
    url: str
    merged_into: str | None
    # Deleted or merged over there (a merged one's notes go to ``merged_into``).
    gone: bool = False

    @property
    def external_ref(self) -> str:
        return f"{self.prefix}-{self.external_id}"

    @property
    def note_target(self) -> str:
        """Where notes go: the ticket it was merged into, else the ticket itself."""
        return self.merged_into or self.external_id


def clean_title(title: str) -> str:
    return sanitize_display_text(title, TITLE_MAX) or NO_TITLE


def clean_url(url: str) -> str:
    # Only our connector builds this link (base URL + id), but it is outside text all the same.
    shown = sanitize_display_text(url, URL_MAX)
    return shown if shown.startswith(("http://", "https://")) else ""


async def link_of_ticket(services: Services, ticket_id: int) -> MirrorLink | None:
    async with services.db() as db:
        row = (
            await db.execute(
                select(ExternalTicket, Connector.name, Connector.prefix)
                .join(Connector, Connector.id == ExternalTicket.connector_id)
                .where(ExternalTicket.ticket_id == ticket_id)
            )
        ).one_or_none()
    return None if row is None else _link(row[0], row[1], row[2])


async def ticket_of_external(services: Services, prefix: str, external_id: str) -> int | None:
    """Our ticket number of ``PREFIX-<external id>``, or None."""
    async with services.db() as db:
        return await db.scalar(
            select(ExternalTicket.ticket_id)
            .join(Connector, Connector.id == ExternalTicket.connector_id)
            .where(Connector.prefix == prefix, ExternalTicket.external_id == external_id)
        )


def _link(row: ExternalTicket, name: str, prefix: str) -> MirrorLink:
    return MirrorLink(
        ticket_id=row.ticket_id,
        connector=name,
        prefix=prefix,
        external_id=row.external_id,
        url=row.url,
        merged_into=row.merged_into,
        gone=row.seen_status == GONE,
    )


class Mirror:
    """Applies what a connector read to the built-in store."""

    def __init__(
        self, services: Services, store: TicketStore, on_gone: GoneHook | None = None
    ) -> None:
        self.services = services
        self.store = store
        self.on_gone = on_gone
        # (connector, external id) -> the customer value last refused: a ticket read again
        # unchanged (a feed that re-reads its last seconds) is not refused and audited again.
        self._refused: dict[tuple[int, str], str] = {}

    async def apply(
        self, record: ConnectorRecord, external_id: str, remote: RemoteTicket | None
    ) -> str | None:
        """Bring the mirror of ``external_id`` up to date; a line for the log, or None."""
        async with self.services.db() as db:
            link = await db.scalar(
                select(ExternalTicket).where(
                    ExternalTicket.connector_id == record.id,
                    ExternalTicket.external_id == external_id,
                )
            )
        if link is None:
            if remote is None or remote.merged_into is not None:
                return None
            return await self._create(record, remote)
        return await self._update(record, link, remote)

    async def _create(self, record: ConnectorRecord, remote: RemoteTicket) -> str | None:
        level = record.levels.level_of(remote.place)
        if level is None or remote.status in ("resolved", "closed"):
            return None  # not in a queue of ours, or done with: nothing to work on here
        customer = record.customer or sanitize_display_text(
            remote.custom_fields.get(record.customer_field, ""), 63
        )
        async with self.services.db() as db:
            known = await db.scalar(select(Customer.id).where(Customer.name == customer))
        if not customer or known is None:
            await self._refuse_customer(record, remote, customer)
            return None
        self._refused.pop((record.id, remote.external_id), None)
        now = self.services.clock()

        async def link(db: AsyncSession, number: int) -> None:
            db.add(
                ExternalTicket(
                    ticket_id=number,
                    connector_id=record.id,
                    external_id=remote.external_id,
                    url=clean_url(remote.url),
                    synced_at=now,
                    **_seen(remote),
                )
            )
            if remote.status != "new":
                await db.execute(
                    update(Ticket).where(Ticket.id == number).values(status=remote.status)
                )

        try:
            info = await self.store.create(
                NewTicket(
                    title=clean_title(remote.title),
                    customer=customer,
                    requester=sanitize_display_text(remote.requester, REQUESTER_MAX),
                    level=level,
                ),
                actor=f"connector:{record.name}",
                source=record.prefix,
                also=link,
            )
        except IntegrityError:
            return None  # another broker node mirrored it a moment ago
        return f"{record.prefix}-{remote.external_id} mirrored as {info.ref}"

    async def _refuse_customer(
        self, record: ConnectorRecord, remote: RemoteTicket, customer: str
    ) -> None:
        """A ticket of a connector of all customers that names none of ours stays out of
        Secondline: nothing of it is stored, the broker logs why and the audit log has it
        (``connector.ticket_refused``). It is read again when it changes over there, so a
        corrected field (or the customer added here, then any change of the ticket) mirrors
        it then: nothing is lost."""
        if self._refused.get((record.id, remote.external_id)) == customer:
            return
        self._refused[(record.id, remote.external_id)] = customer
        ref = f"{record.prefix}-{remote.external_id}"
        why = "is empty" if not customer else f"names {customer!r}, no customer of ours"
        log.warning(
            "connector %s: %s not mirrored: its field %r %s; add the customer "
            "(`secondline customer add`) or correct the field in the ticket system",
            record.name,
            ref,
            record.customer_field,
            why,
        )
        await self.services.audit.record(
            actor=f"connector:{record.name}",
            action="connector.ticket_refused",
            target=ref,
            outcome="denied",
            source=record.prefix,
            details={"field": record.customer_field, "value": customer, "why": "unknown customer"},
        )

    async def _update(
        self, record: ConnectorRecord, link: ExternalTicket, remote: RemoteTicket | None
    ) -> str | None:
        ticket_id = link.ticket_id
        ref = f"{record.prefix}-{link.external_id}"
        actor = f"connector:{record.name}"
        now = self.services.clock()
        if remote is None or remote.merged_into is not None:
            merged = None if remote is None else remote.merged_into
            if link.merged_into == merged and link.seen_status == GONE:
                return None
            async with self.services.db() as db, db.begin():
                await db.execute(
                    update(ExternalTicket)
                    .where(ExternalTicket.ticket_id == ticket_id)
                    .values(merged_into=merged, seen_status=GONE, synced_at=now)
                )
                await db.execute(
                    update(Ticket)
                    .where(Ticket.id == ticket_id)
                    .values(status="closed", closed_at=now, updated_at=now)
                )
            what = "deleted" if merged is None else f"merged into {record.prefix}-{merged}"
            await self.services.audit.record(
                actor=actor,
                action="ticket.external_gone",
                target=f"T-{ticket_id}",
                source=record.prefix,
                details={"external": ref, "what": what},
            )
            if self.on_gone is not None:
                where = (
                    f"its note goes to {record.prefix}-{merged}"
                    if merged is not None
                    else "its note is kept in Secondline only"
                )
                await self.on_gone(
                    ticket_id,
                    f"{ref} was {what} in the ticket system and T-{ticket_id} is closed; "
                    f"this session may go on, and {where}.",
                )
            return f"{ref} was {what}; T-{ticket_id} closed"
        changes: list[str] = []
        values: dict[str, object] = {}
        title = clean_title(remote.title)
        if title != link.seen_title:
            values["title"] = title
            changes.append("title")
        state = remote.state[:STATE_MAX]
        if state != link.seen_status:
            values["status"] = remote.status
            if remote.status == "resolved":
                values["resolved_at"] = now
            if remote.status == "closed":
                values["closed_at"] = now
            changes.append(f"status {link.seen_status} -> {state}")
        owner = remote.owner or ""
        if owner[:PLACE_MAX] != link.seen_owner:
            values["assignee"] = await self._staff_name(owner)
            changes.append("owner")
        if values:
            values["updated_at"] = now
            async with self.services.db() as db, db.begin():
                await db.execute(update(Ticket).where(Ticket.id == ticket_id).values(**values))
        place = remote.place[:PLACE_MAX]
        if place != link.seen_queue:
            moved = await self._move(record, ticket_id, link.seen_queue, remote)
            # A move to the level the ticket has here already (ours, come back through the
            # feed) changes nothing here; it is noted so the log shows the feed caught up.
            changes.append(moved or f"queue {sanitize_display_text(remote.place, PLACE_MAX)!r}")
        async with self.services.db() as db, db.begin():
            await db.execute(
                update(ExternalTicket)
                .where(ExternalTicket.ticket_id == ticket_id)
                .values(synced_at=now, **_seen(remote))
            )
        if not changes:
            return None
        await self.services.audit.record(
            actor=actor,
            action="ticket.external_sync",
            target=f"T-{ticket_id}",
            source=record.prefix,
            details={"external": ref, "changes": changes},
        )
        return f"{ref} (T-{ticket_id}): {', '.join(changes)}"

    async def _move(
        self, record: ConnectorRecord, ticket_id: int, old_place: str, remote: RemoteTicket
    ) -> str | None:
        to_level = record.levels.level_of(remote.place)
        seen = await self.store.get(ticket_id)
        if to_level is None or seen is None or seen.level == to_level:
            return None
        who = sanitize_display_text(remote.changed_by or "someone", 64)
        change = LevelChange(
            kind="escalate" if to_level > seen.level else "hand_back",
            from_level=seen.level,
            to_level=to_level,
            reason=(
                f"moved in {record.prefix} by {who} from queue "
                f"{sanitize_display_text(old_place, PLACE_MAX)!r} to "
                f"{sanitize_display_text(remote.place, PLACE_MAX)!r}"
            ),
        )
        await self.store.change_level(
            seen, change, actor=f"connector:{record.name}", source=record.prefix
        )
        return f"level {seen.level} -> {to_level}"

    async def _staff_name(self, owner: str) -> str | None:
        """The external owner as our assignee: a staff member of the same name, else nobody."""
        try:
            name = parse_user_name(owner.lower())
        except InvalidName:
            return None
        async with self.services.db() as db:
            found = await db.scalar(select(User.name).where(User.name == name))
        return found


def _seen(remote: RemoteTicket) -> dict[str, str]:
    return {
        "seen_queue": remote.place[:PLACE_MAX],
        "seen_status": remote.state[:STATE_MAX],
        "seen_owner": (remote.owner or "")[:PLACE_MAX],
        "seen_title": clean_title(remote.title),
    }
