"""Changes made in Secondline to a mirrored ticket, written to its external system.

An escalation or hand-back of a mirrored ticket queues a row in ``connector_outbox`` inside
the change's own transaction (``queue_level_change``, a ``TicketStore.level_hooks`` entry),
so a committed change is never lost and a refused one never leaves. The sync task then
delivers each connector's due rows after reading its change feed: a note on the external
ticket saying who moved it, from where to where and why, then the move itself. Both are
checked before they are made (the note by the key in its subject, the move by reading the
ticket's place), so a retry after a lost answer neither doubles the note nor moves twice.
A change that came *from* the external system (actor ``connector:…``) is not sent back.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import secrets
from collections.abc import Callable
from typing import Final

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors.errors import ExternalDown, ExternalError
from broker.connectors.remote import ExternalSystem
from broker.connectors.settings import LevelMap
from broker.connectors.store import ConnectorRecord
from broker.db.models_connectors import Connector, ConnectorOutbox, ExternalTicket
from broker.ports import TicketInfo
from broker.rules import LevelChange, sanitize_display_text
from broker.services import Services
from broker.sessions.outbox import retry_delay
from broker.tickets.store import LevelHook

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "secondline-level-change:"
FROM_CONNECTOR: Final = "connector:"
BATCH: Final = 20
CLAIM_SECONDS: Final = 120.0
SUBJECT: Final = "Secondline level change"


def change_text(change: LevelChange, actor: str, place: str) -> str:
    what = "Escalated" if change.kind == "escalate" else "Handed back"
    return (
        f"{what} in Secondline by {sanitize_display_text(actor, 64)} from level "
        f"{change.from_level} to level {change.to_level} (queue {place!r}).\n\n"
        f"Reason: {change.reason}\n"
    )


def level_hook(clock: Callable[[], dt.datetime]) -> LevelHook:
    """The hook that queues a mirrored ticket's level change for its external system."""

    async def queue_level_change(
        db: AsyncSession, seen: TicketInfo, change: LevelChange, actor: str
    ) -> None:
        if actor.startswith(FROM_CONNECTOR):
            return
        found = (
            await db.execute(
                select(ExternalTicket, Connector.settings)
                .join(Connector, Connector.id == ExternalTicket.connector_id)
                .where(ExternalTicket.ticket_id == seen.id)
            )
        ).one_or_none()
        if found is None:
            return
        link, settings = found
        place = LevelMap.from_json(settings.get("levels")).place_of(change.to_level)
        now = clock()
        db.add(
            ConnectorOutbox(
                connector_id=link.connector_id,
                ticket_id=seen.id,
                external_id=link.merged_into or link.external_id,
                key=f"{KEY_PREFIX}{seen.id}-{secrets.token_hex(8)}",
                place=place,
                text=change_text(change, actor, place),
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    return queue_level_change


class Outbound:
    """Delivers the due rows of one connector at a time (called by the sync task)."""

    def __init__(self, services: Services, rng: random.Random | None = None) -> None:
        self.services = services
        self.rng = rng or random.SystemRandom()
        config = services.config
        self.first = config.ticket_retry_first_seconds
        self.cap = config.ticket_retry_max_seconds

    async def deliver(self, record: ConnectorRecord, system: ExternalSystem) -> None:
        """Send the connector's due changes; an unreachable system stops the batch (and is
        raised, so the sync marks the connector unhealthy)."""
        now = self.services.clock()
        async with self.services.db() as db:
            ids = (
                (
                    await db.execute(
                        select(ConnectorOutbox.id)
                        .where(
                            ConnectorOutbox.connector_id == record.id,
                            ConnectorOutbox.state == "pending",
                            ConnectorOutbox.next_attempt_at <= now,
                        )
                        .order_by(ConnectorOutbox.id)
                        .limit(BATCH)
                    )
                )
                .scalars()
                .all()
            )
        for row_id in ids:
            row = await self._claim(row_id)
            if row is None:
                continue
            try:
                await self._send(system, row)
            except ExternalError as exc:
                await self._failed(row, exc.message)
                if isinstance(exc, ExternalDown):
                    raise
                continue
            async with self.services.db() as db, db.begin():
                await db.execute(
                    update(ConnectorOutbox)
                    .where(ConnectorOutbox.id == row.id)
                    .values(
                        state="delivered",
                        delivered_at=self.services.clock(),
                        claimed_until=None,
                        last_error=None,
                    )
                )
            log.info(
                "connector %s: level change of T-%d written to %s-%s",
                record.name,
                row.ticket_id,
                record.prefix,
                row.external_id,
            )

    async def _claim(self, row_id: int) -> ConnectorOutbox | None:
        now = self.services.clock()
        async with self.services.db() as db, db.begin():
            result = await db.execute(
                update(ConnectorOutbox)
                .where(
                    ConnectorOutbox.id == row_id,
                    ConnectorOutbox.state == "pending",
                    or_(
                        ConnectorOutbox.claimed_until.is_(None),
                        ConnectorOutbox.claimed_until < now,
                    ),
                )
                .values(claimed_until=now + dt.timedelta(seconds=CLAIM_SECONDS))
            )
            if getattr(result, "rowcount", 0) != 1:
                return None  # another broker node took it
            return (
                await db.execute(select(ConnectorOutbox).where(ConnectorOutbox.id == row_id))
            ).scalar_one()

    async def _send(self, system: ExternalSystem, row: ConnectorOutbox) -> None:
        if not await system.has_note(row.external_id, row.key):
            await system.add_note(
                row.external_id, key=row.key, subject=SUBJECT, text=row.text, attachments=()
            )
        remote = await system.ticket(row.external_id)
        if remote is not None and remote.place != row.place:
            await system.move(row.external_id, row.place)

    async def _failed(self, row: ConnectorOutbox, error: str) -> None:
        attempts = min(row.attempts + 1, 2**31 - 1)
        delay = retry_delay(attempts, self.rng.random(), first=self.first, cap=self.cap)
        async with self.services.db() as db, db.begin():
            await db.execute(
                update(ConnectorOutbox)
                .where(ConnectorOutbox.id == row.id)
                .values(
                    attempts=attempts,
                    next_attempt_at=self.services.clock() + dt.timedelta(seconds=delay),
                    claimed_until=None,
                    last_error=error[:300],
                )
            )
        log.warning(
            "level change of T-%d not written to %s yet (attempt %d): %s",
            row.ticket_id,
            row.external_id,
            attempts,
            error,
        )
