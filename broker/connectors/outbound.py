"""Changes made in Secondline to a mirrored ticket, written to its external system.

An escalation or hand-back, an assignment or a status action on a mirrored ticket queues a
row in ``connector_outbox`` inside the change's own transaction (``change_hook``, a
``TicketStore.change_hooks`` entry), so a committed change is never lost and a refused one
never leaves. The sync task then delivers each connector's due rows, oldest first, after
reading its change feed:

- ``level``: a note saying who moved the ticket, from where to where and why; then the move;
- ``assign``: the owner (a user of the same name there);
- ``status``: for a resolve, a note with the solution; then the status;
- ``note``: a note only: a machine linked (which machine, by whom); systems have no field
  for it by default, and a note carries who and when in the history staff read there;
- ``event`` (webhook connectors): the signed event in ``text`` (``webhook_events``).

Each step is checked before it is made (a note by the key in its subject, a field by reading
the ticket), so a retry after a lost answer does nothing twice; a field the system did not
take when asked is a refusal. A system that is down keeps the row for later; one that
refuses it (no such user, no right) marks it ``refused``: it is logged and audited, never
retried. A change that came *from* the external system (actor ``connector:…``) is not sent
back.
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

from broker.connectors.errors import (
    ExternalDown,
    ExternalError,
    ExternalRefused,
    ExternalRejected,
)
from broker.connectors.remote import ExternalSystem
from broker.connectors.settings import LevelMap
from broker.connectors.store import ConnectorRecord
from broker.connectors.webhook import WebhookSystem
from broker.connectors.webhook_events import EVENT_KIND, WEBHOOK_KIND, change_event, queue_event
from broker.db.models_connectors import Connector, ConnectorOutbox, ExternalTicket
from broker.ports import TicketInfo
from broker.rules import LevelChange, sanitize_display_text
from broker.services import Services
from broker.tickets.outbox import retry_delay
from broker.tickets.records import Assigned, MachineLinked, StatusChanged
from broker.tickets.store import ChangeHook, TicketChange

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "secondline-change:"
FROM_CONNECTOR: Final = "connector:"
BATCH: Final = 20
CLAIM_SECONDS: Final = 120.0
SUBJECT: Final = "Secondline ticket change"


def change_text(change: LevelChange, actor: str, place: str) -> str:
    what = "Escalated" if change.kind == "escalate" else "Handed back"
    return (
        f"{what} in Secondline by {sanitize_display_text(actor, 64)} from level "
        f"{change.from_level} to level {change.to_level} (queue {place!r}).\n\n"
        f"Reason: {change.reason}\n"
    )


def resolve_text(actor: str, solution: str) -> str:
    return (
        f"Resolved in Secondline by {sanitize_display_text(actor, 64)}.\n\nSolution: {solution}\n"
    )


def linked_text(linked: MachineLinked, actor: str) -> str:
    return (
        f"Machine {sanitize_display_text(linked.agent_name, 64)} (agent {linked.agent_id}) "
        f"linked to this ticket in Secondline by {sanitize_display_text(actor, 64)}.\n"
    )


def change_hook(clock: Callable[[], dt.datetime]) -> ChangeHook:
    """The hook that queues a mirrored ticket's changes for its external system."""

    async def queue_change(
        db: AsyncSession, seen: TicketInfo, change: TicketChange, actor: str
    ) -> None:
        if actor.startswith(FROM_CONNECTOR):
            return
        found = (
            await db.execute(
                select(ExternalTicket, Connector.settings, Connector.kind, Connector.name)
                .add_columns(Connector.prefix)
                .join(Connector, Connector.id == ExternalTicket.connector_id)
                .where(ExternalTicket.ticket_id == seen.id)
            )
        ).one_or_none()
        if found is None:
            return
        link, settings, connector_kind, connector, prefix = found
        if connector_kind == WEBHOOK_KIND:
            event_type, data = change_event(change, actor)
            queue_event(
                db,
                link=link,
                connector=connector,
                prefix=prefix,
                key=f"{KEY_PREFIX}{seen.id}-{secrets.token_hex(8)}",
                event_type=event_type,
                data=data,
                now=clock(),
            )
            return
        if isinstance(change, Assigned):
            kind, value, text = "assign", change.assignee, ""
        elif isinstance(change, StatusChanged):
            kind, value = "status", change.status
            text = resolve_text(actor, change.solution) if change.solution else ""
        elif isinstance(change, MachineLinked):
            kind, value, text = "note", change.agent_name, linked_text(change, actor)
        else:
            place = LevelMap.from_json(settings.get("levels")).place_of(change.to_level)
            kind, value, text = "level", place, change_text(change, actor, place)
        now = clock()
        db.add(
            ConnectorOutbox(
                connector_id=link.connector_id,
                ticket_id=seen.id,
                external_id=link.merged_into or link.external_id,
                key=f"{KEY_PREFIX}{seen.id}-{secrets.token_hex(8)}",
                kind=kind,
                value=value[:200],
                text=text,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    return queue_change


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
            except ExternalRejected as exc:
                await self._refused(record, row, exc.message)
                continue
            except ExternalError as exc:
                await self._failed(row, exc.message)
                # A receiver refusing our signature refuses every event: the connector is
                # unhealthy until its secret is right.
                if isinstance(exc, ExternalDown) or (
                    row.kind == EVENT_KIND and isinstance(exc, ExternalRefused)
                ):
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
            if row.kind == EVENT_KIND:
                log.info(
                    "connector %s: %s of T-%d (%s-%s) taken by the receiver, event %s",
                    record.name,
                    row.value,
                    row.ticket_id,
                    record.prefix,
                    row.external_id,
                    row.key,
                )
                continue
            log.info(
                "connector %s: %s change of T-%d to %r written to %s-%s",
                record.name,
                row.kind,
                row.ticket_id,
                row.value,
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
        if row.kind == EVENT_KIND:
            if not isinstance(system, WebhookSystem):
                raise ExternalRejected(f"a {row.value} event is for a webhook connector only")
            await system.send_event(row.key, row.text)
            return
        if row.text and not await system.has_note(row.external_id, row.key):
            await system.add_note(
                row.external_id, key=row.key, subject=SUBJECT, text=row.text, attachments=()
            )
        if row.kind == "note":
            return  # the note is the whole change
        remote = await system.ticket(row.external_id)
        if remote is None:
            raise ExternalRejected(f"the ticket {row.external_id} is gone from the system")
        if row.kind == "level" and remote.place != row.value:
            await system.move(row.external_id, row.value)
        elif row.kind == "assign" and remote.owner != row.value:
            await system.assign(row.external_id, row.value)
        elif row.kind == "status" and remote.state != system.status_for(row.value):
            await system.set_status(row.external_id, row.value)
        else:
            return  # there already: an earlier try arrived, or someone did it over there
        # Systems answer some refusals (no such user, a right missing) with success and a
        # message: only the ticket itself says whether the change was taken.
        after = await system.ticket(row.external_id)
        taken = after is not None and (
            (row.kind == "level" and after.place == row.value)
            or (row.kind == "assign" and after.owner == row.value)
            or (row.kind == "status" and after.state == system.status_for(row.value))
        )
        if not taken:
            raise ExternalRejected(
                f"the system did not take the {row.kind} change to {row.value!r}; "
                "check that the user exists there and the token's rights"
            )

    async def _refused(self, record: ConnectorRecord, row: ConnectorOutbox, error: str) -> None:
        async with self.services.db() as db, db.begin():
            await db.execute(
                update(ConnectorOutbox)
                .where(ConnectorOutbox.id == row.id)
                .values(state="refused", claimed_until=None, last_error=error[:300])
            )
        await self.services.audit.record(
            actor=f"{FROM_CONNECTOR}{record.name}",
            action="connector.change_refused",
            target=f"T-{row.ticket_id}",
            outcome="failed",
            details={"kind": row.kind, "value": row.value, "error": error[:300]},
        )
        log.error(
            "connector %s: %s change of T-%d refused by %s-%s: %s",
            record.name,
            row.kind,
            row.ticket_id,
            record.prefix,
            row.external_id,
            error,
        )

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
            "%s of T-%d not written to %s yet (attempt %d): %s",
            row.value if row.kind == EVENT_KIND else f"{row.kind} change",
            row.ticket_id,
            row.external_id,
            attempts,
            error,
        )
