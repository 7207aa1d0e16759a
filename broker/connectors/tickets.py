"""The ticket system the session machinery writes to when connectors are configured: the
built-in store for every ticket, and for a mirrored ticket its external system as well.

A session's note on a mirrored ticket becomes an internal note over there (RT: a comment)
with its attachments, and is kept in the built-in store too, so the console shows it. The
external systems have no idempotency keys, so every try first asks the ticket's history
whether an earlier try arrived (its answer lost to a cut connection, a timeout or a crash)
and adds the note only when it did not: the outbox's retries then deliver it exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence

from sqlalchemy.exc import IntegrityError

from broker.connectors.errors import ExternalRefused
from broker.connectors.mirror import link_of_ticket
from broker.connectors.store import ConnectorStore
from broker.connectors.sync import Systems
from broker.connectors.webhook_events import WEBHOOK_KIND, queue_session_ended
from broker.ports import NoteAttachment, TicketInfo
from broker.services import Services
from broker.tickets import TicketStore

log = logging.getLogger(__name__)

SUBJECT = "Secondline session note"


class ConnectedTickets:
    """A :class:`broker.ports.TicketSystem` over the built-in store and the connectors."""

    def __init__(
        self,
        services: Services,
        store: TicketStore,
        connectors: ConnectorStore,
        systems: Systems,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.services = services
        self.store = store
        self.connectors = connectors
        self.systems = systems
        # Wakes the sync task, which sends queued webhook events.
        self.wake = wake

    async def get(self, ticket_id: int) -> TicketInfo | None:
        return await self.store.get(ticket_id)

    async def assign(self, ticket_id: int, assignee: str, *, actor: str) -> None:
        await self.store.assign(ticket_id, assignee, actor=actor)

    async def change_status(self, ticket_id: int, action: str, *, actor: str) -> None:
        await self.store.change_status(ticket_id, action, actor=actor)

    async def add_note(
        self,
        ticket_id: int,
        *,
        author: str,
        text: str,
        internal: bool,
        attachments: Sequence[NoteAttachment] = (),
        idempotency_key: str | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        link = await link_of_ticket(self.services, ticket_id)
        if link is not None and link.gone and link.merged_into is None:
            link = None  # deleted over there: the note stays here (the sessions were told)
        if link is not None and idempotency_key is not None:
            record = await self.connectors.get(link.connector)
            if record.kind == WEBHOOK_KIND:
                await self._note_to_webhook(
                    ticket_id, author, text, internal, attachments, idempotency_key, now
                )
                return
            system = self.systems.get(record)
            target = link.note_target
            try:
                if await system.has_note(target, idempotency_key):
                    log.info(
                        "%s-%s holds the note %s already; not sent again",
                        link.prefix,
                        target,
                        idempotency_key,
                    )
                else:
                    await system.add_note(
                        target,
                        key=idempotency_key,
                        subject=SUBJECT,
                        text=text,
                        attachments=attachments,
                    )
            except ExternalRefused as exc:
                await self.connectors.set_health(record, False, exc.message)
                raise
        await self.store.add_note(
            ticket_id,
            author=author,
            text=text,
            internal=internal,
            attachments=attachments,
            idempotency_key=idempotency_key,
            now=now,
        )

    async def _note_to_webhook(
        self,
        ticket_id: int,
        author: str,
        text: str,
        internal: bool,
        attachments: Sequence[NoteAttachment],
        key: str,
        now: dt.datetime | None,
    ) -> None:
        """Stored here first, so the links of the ``session.ended`` event can be fetched
        when it arrives; then the event, once (both steps skip what a retry finds done)."""
        await self.store.add_note(
            ticket_id,
            author=author,
            text=text,
            internal=internal,
            attachments=attachments,
            idempotency_key=key,
            now=now,
        )
        try:
            async with self.services.db() as db, db.begin():
                queued = await queue_session_ended(
                    db,
                    ticket_id=ticket_id,
                    key=key,
                    author=author,
                    text=text,
                    public_url=self.services.config.public_url,
                    now=self.services.clock(),
                )
        except IntegrityError:
            queued = False  # another broker node queued it a moment ago
        if queued and self.wake is not None:
            self.wake()
