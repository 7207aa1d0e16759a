"""The built-in ticket store: the default :class:`broker.ports.TicketSystem`, and what the
REST API needs beyond it (create, list, show, level changes, links, attachments).

The store keeps the data consistent with ``broker.rules.ticket_states`` (the status table,
escalation up and hand-back down, with a reason) but decides nothing about *who* may act:
callers judge that with ``broker.rules.permissions`` over a :class:`TicketInfo` they read,
then hand that same ``TicketInfo`` back as ``seen``. Every change is a conditional UPDATE on
the status, level and assignee that were judged, so a ticket that changed in between is
refused (:class:`TicketConflict`) instead of changed on stale grounds; that is also how two
people taking the same ticket at once end with exactly one winner. The first statement of
every writing transaction is that UPDATE (``guard``), which takes SQLite's write lock up
front. Notes and attachments are written by ``notes.NoteBook``, reached as ``store.notes``.

Every change is audited here, after it committed; refusals are audited by the caller.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.audit.log import AuditLog
from broker.db.models_staff import Customer
from broker.db.models_tickets import (
    Ticket,
    TicketAgent,
    TicketLevelChange,
)
from broker.ports import NoteAttachment, TicketInfo
from broker.rules import (
    AgentView,
    Decision,
    InvalidName,
    LevelChange,
    Refused,
    TicketView,
    TransitionRefused,
    is_open_status,
    parse_user_name,
    transition,
)
from broker.services import Services
from broker.tickets import queries, text
from broker.tickets.errors import (
    TicketConflict,
    TicketInputError,
    TicketNotFound,
    TicketRefused,
)
from broker.tickets.files import AttachmentFiles
from broker.tickets.guard import WORK_GUARDS, guarded_update, ticket_changed
from broker.tickets.notes import NoteBook
from broker.tickets.records import (
    Assigned,
    AttachmentRecord,
    MachineLinked,
    NewTicket,
    NoteRecord,
    StatusChanged,
    TicketDetail,
    TicketFilter,
    TicketSummary,
)

FIRST_TICKET: Final = 1001
_ID_ATTEMPTS: Final = 20

# Judges whether an agent may be linked to the ticket being created (see ``create``).
LinkVetter = Callable[[TicketView, AgentView], Decision]
# Writes more rows for the ticket being created, in its transaction (see ``create``).
CreateHook = Callable[[AsyncSession, int], Awaitable[None]]
# What a change hook is told: an escalation or hand-back, an assignment, a status action, a
# machine linked.
TicketChange = LevelChange | Assigned | StatusChanged | MachineLinked
# Writes more rows for a change, in its transaction (``change_hooks``):
# (db, ticket as judged, the change, actor).
ChangeHook = Callable[[AsyncSession, TicketInfo, TicketChange, str], Awaitable[None]]


class _IdTaken(Exception):
    """Another writer took the ticket number this transaction chose; choose again."""


class TicketStore:
    """The built-in ticket system of one broker.

    ``TicketStore(db, audit, files, clock=...)``, or ``TicketStore.from_services(services)``.
    """

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        files: AttachmentFiles,
        *,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._db = db
        self._audit = audit
        self.files = files
        self._clock = clock
        self.notes = NoteBook(db, audit, files, clock)
        # Run inside the transaction of every level change, assignment and status action (a
        # connector queues the change for its external system there, so the two are
        # committed together or not at all).
        self.change_hooks: list[ChangeHook] = []

    @classmethod
    def from_services(cls, services: Services) -> TicketStore:
        config = services.config
        files = AttachmentFiles(config.attachments_dir, config.max_attachment_bytes)
        return cls(services.db, services.audit, files, clock=services.clock)

    # ----------------------------------------------------------------- reading

    async def get(self, ticket_id: int) -> TicketInfo | None:
        """The ticket, or None when it does not exist."""
        async with self._db() as db:
            return await queries.ticket_info(db, ticket_id)

    async def summary(self, ticket_id: int) -> TicketSummary | None:
        async with self._db() as db:
            return await queries.ticket_summary(db, ticket_id)

    async def detail(self, ticket_id: int) -> TicketDetail | None:
        async with self._db() as db:
            return await queries.ticket_detail(db, ticket_id)

    async def list_tickets(self, flt: TicketFilter) -> list[TicketSummary]:
        async with self._db() as db:
            return await queries.list_tickets(db, flt)

    async def help_requests_since(self, agent_id: str, since: dt.datetime) -> int:
        """How many tickets the end user of ``agent_id`` opened after ``since``."""
        async with self._db() as db:
            return await queries.help_requests_since(db, agent_id, since)

    async def attachment(self, ticket_id: int, name: str) -> tuple[AttachmentRecord, bytes] | None:
        """The attachment and its bytes, or None when there is no such attachment."""
        return await self.notes.attachment(ticket_id, name)

    # ---------------------------------------------------------------- creating

    async def create(
        self,
        new: NewTicket,
        *,
        actor: str,
        source: str = "",
        vet_link: LinkVetter | None = None,
        also: CreateHook | None = None,
    ) -> TicketInfo:
        """Create a ticket with status ``new``, numbered from 1001, with its agents linked.

        ``vet_link`` judges each agent against the new ticket (the caller's
        ``may_link_agent``); a refusal raises :class:`TicketRefused` and nothing is created.
        ``also`` writes more rows in the same transaction (a connector's link to the
        original), so the ticket never exists without them.
        """
        title = text.clean_title(new.title)
        description = text.clean_text(
            new.description, "description", text.DESCRIPTION_MAX, required=False
        )
        requester = text.clean_requester(new.requester)
        level = text.check_level(new.level)
        agents = list({a.id: a for a in new.agents}.values())
        now = self._clock()
        for _ in range(_ID_ATTEMPTS):
            try:
                async with self._db() as db, db.begin():
                    customer = await self._customer(db, new.customer)
                    number = await self._insert_ticket(
                        db,
                        Ticket(
                            title=title,
                            description=description,
                            customer_id=customer.id,
                            requester=requester,
                            level=level,
                            status="new",
                            assignee=None,
                            created_by=new.created_by,
                            origin_agent_id=new.origin_agent_id,
                            created_at=now,
                            updated_at=now,
                        ),
                    )
                    info = TicketInfo(
                        id=number,
                        title=title,
                        status="new",
                        level=level,
                        customer=customer.name,
                        assignee=None,
                        agent_ids=frozenset(a.id for a in agents),
                        created_by=new.created_by,
                    )
                    for agent in agents:
                        if vet_link is not None:
                            decision = vet_link(info.view(), agent)
                            if isinstance(decision, Refused):
                                raise TicketRefused(decision)
                        db.add(
                            TicketAgent(
                                ticket_id=number, agent_id=agent.id, linked_by=actor, linked_at=now
                            )
                        )
                    if also is not None:
                        await also(db, number)
            except _IdTaken:
                continue
            break
        else:
            raise TicketConflict("too many tickets are being created at once; try again")
        await self._audit.record(
            actor=actor,
            action="ticket.create",
            target=info.ref,
            source=source,
            details={
                "customer": info.customer,
                "level": level,
                "agents": sorted(info.agent_ids),
                "origin_agent": new.origin_agent_id,
            },
        )
        return info

    async def _customer(self, db: AsyncSession, name: str) -> Customer:
        row = (await db.execute(select(Customer).where(Customer.name == name))).scalar_one_or_none()
        if row is None:
            raise TicketInputError(
                f"there is no customer {name[:63]!r}; see `secondline customer list`",
                code="unknown_customer",
                status=404,
            )
        return row

    async def _insert_ticket(self, db: AsyncSession, row: Ticket) -> int:
        # max + 1 instead of a sequence: both engines number alike, and a racing writer
        # fails on the primary key (then we choose again) instead of reusing a number.
        top = await db.scalar(select(func.max(Ticket.id)))
        row.id = max(int(top or 0) + 1, FIRST_TICKET)
        db.add(row)
        try:
            await db.flush()
        except IntegrityError:
            raise _IdTaken from None
        return row.id

    # ---------------------------------------------------------------- changing

    async def change_level(
        self, seen: TicketInfo, change: LevelChange, *, actor: str, source: str = ""
    ) -> TicketInfo:
        """Escalate or hand back (``change`` from ``broker.rules``); the assignee is cleared,
        so the ticket waits in the queue of its new level."""
        if change.from_level != seen.level:
            raise ticket_changed(seen)
        async with self._db() as db, db.begin():
            await guarded_update(
                db, seen, {"level": change.to_level, "assignee": None}, self._clock()
            )
            db.add(
                TicketLevelChange(
                    ticket_id=seen.id,
                    kind=change.kind,
                    from_level=change.from_level,
                    to_level=change.to_level,
                    reason=change.reason,
                    actor=actor,
                    at=self._clock(),
                )
            )
            for hook in self.change_hooks:
                await hook(db, seen, change, actor)
        await self._audit.record(
            actor=actor,
            action=f"ticket.{change.kind}",
            target=seen.ref,
            source=source,
            details={
                "from": change.from_level,
                "to": change.to_level,
                "reason": change.reason,
                "assignee_was": seen.assignee,
            },
        )
        return dataclasses.replace(seen, level=change.to_level, assignee=None)

    async def set_assignee(
        self,
        seen: TicketInfo,
        assignee: str,
        *,
        actor: str,
        source: str = "",
        action: str = "ticket.assign",
    ) -> TicketInfo:
        """Assign the ticket, if nobody changed its status, level or assignee since ``seen``."""
        try:
            async with self._db() as db, db.begin():
                await guarded_update(db, seen, {"assignee": assignee}, self._clock())
                for hook in self.change_hooks:
                    await hook(db, seen, Assigned(assignee), actor)
        except TicketConflict:
            now = await self.get(seen.id)
            if seen.assignee is None and now is not None and now.assignee is not None:
                raise TicketConflict(
                    f"ticket {seen.ref} was just taken by {now.assignee}; "
                    "ask them or pick another ticket",
                    code="already_taken",
                ) from None
            raise
        await self._audit.record(
            actor=actor,
            action=action,
            target=seen.ref,
            source=source,
            details={"assignee": assignee, "was": seen.assignee},
        )
        return dataclasses.replace(seen, assignee=assignee)

    async def apply_action(
        self,
        seen: TicketInfo,
        action: str,
        *,
        actor: str,
        source: str = "",
        solution: str | None = None,
        assign_to: str | None = None,
    ) -> TicketInfo:
        """Apply a status action of the rules' table; ``resolve`` needs a ``solution``."""
        try:
            target = transition(seen.status, action, ticket=seen.id)
        except TransitionRefused as exc:
            raise TicketConflict(exc.message, code=exc.code) from None
        now = self._clock()
        values: dict[str, object] = {"status": target}
        if action == "resolve":
            values["solution"] = text.clean_text(
                solution, "solution", text.SOLUTION_MAX, required=True
            )
            values["resolved_at"] = now
        if target == "closed":
            values["closed_at"] = now
        if action == "reopen":
            values["resolved_at"] = None
            values["closed_at"] = None
        if assign_to is not None:
            values["assignee"] = assign_to
        async with self._db() as db, db.begin():
            await guarded_update(db, seen, values, self._clock())
            for hook in self.change_hooks:
                solved = values.get("solution")
                await hook(
                    db,
                    seen,
                    StatusChanged(action, target, solved if isinstance(solved, str) else None),
                    actor,
                )
                if assign_to is not None and assign_to != seen.assignee:
                    await hook(db, seen, Assigned(assign_to), actor)
        await self._audit.record(
            actor=actor,
            action=f"ticket.{action}",
            target=seen.ref,
            source=source,
            details={"from": seen.status, "to": target, "assignee": assign_to or seen.assignee},
        )
        return dataclasses.replace(seen, status=target, assignee=assign_to or seen.assignee)

    async def link_agent(
        self, seen: TicketInfo, agent: AgentView, *, actor: str, source: str = ""
    ) -> TicketInfo:
        """Link an agent (linking twice changes nothing and is not audited again)."""
        if agent.id in seen.agent_ids:
            return seen
        try:
            async with self._db() as db, db.begin():
                await guarded_update(db, seen, {}, self._clock(), WORK_GUARDS)
                db.add(
                    TicketAgent(
                        ticket_id=seen.id,
                        agent_id=agent.id,
                        linked_by=actor,
                        linked_at=self._clock(),
                    )
                )
                # Flushed before the hooks: a link made by someone else a moment ago fails
                # here, so its change is queued for the external system once, by them.
                await db.flush()
                for hook in self.change_hooks:
                    await hook(db, seen, MachineLinked(agent.id, agent.name), actor)
        except IntegrityError:
            # Linked by someone else a moment ago: the outcome is what was asked for.
            return dataclasses.replace(seen, agent_ids=seen.agent_ids | {agent.id})
        await self._audit.record(
            actor=actor,
            action="ticket.link",
            target=seen.ref,
            source=source,
            details={"agent": agent.id, "agent_name": agent.name},
        )
        return dataclasses.replace(seen, agent_ids=seen.agent_ids | {agent.id})

    # ------------------------------------------------------ notes and attachments

    async def write_note(
        self,
        ticket_id: int,
        *,
        author: str,
        text_: str,
        internal: bool,
        attachments: Sequence[NoteAttachment] = (),
        idempotency_key: str | None = None,
        now: dt.datetime | None = None,
        seen: TicketInfo | None = None,
        source: str = "",
    ) -> NoteRecord | None:
        """Add a note; see ``NoteBook.write_note`` for the rules on ``seen`` and idempotency."""
        return await self.notes.write_note(
            ticket_id,
            author=author,
            text_=text_,
            internal=internal,
            attachments=attachments,
            idempotency_key=idempotency_key,
            now=now,
            seen=seen,
            source=source,
        )

    async def attach(
        self,
        seen: TicketInfo,
        *,
        name: str,
        content_type: str | None,
        chunks: AsyncIterator[bytes],
        actor: str,
        source: str = "",
    ) -> AttachmentRecord:
        """Store an uploaded file as an attachment of the ticket, streamed with the size cap."""
        return await self.notes.attach(
            seen, name=name, content_type=content_type, chunks=chunks, actor=actor, source=source
        )

    # ------------------------------------------------- the TicketSystem interface

    async def assign(self, ticket_id: int, assignee: str, *, actor: str, source: str = "") -> None:
        """Assign an unassigned ticket (a session on it assigns it to its opener).

        Assigning to the current assignee changes nothing; a ticket held by someone else
        is refused with :class:`TicketConflict` (code ``assigned_to_other``), so two
        sessions racing for one ticket cannot both take it. Reassigning goes through the
        API, where the rules judge it.
        """
        try:
            name = parse_user_name(assignee)
        except InvalidName as exc:
            raise TicketInputError(exc.message, code=exc.code) from None
        seen = await self.get(ticket_id)
        if seen is None:
            raise TicketNotFound(ticket_id)
        if not is_open_status(seen.status):
            raise TicketConflict(
                f"ticket {seen.ref} is {seen.status}; reopen it first", code="ticket_not_open"
            )
        if seen.assignee == name:
            return
        if seen.assignee is not None:
            raise TicketConflict(
                f"ticket {seen.ref} is assigned to {seen.assignee}", code="assigned_to_other"
            )
        await self.set_assignee(seen, name, actor=actor, source=source, action="ticket.take")

    async def change_status(
        self,
        ticket_id: int,
        action: str,
        *,
        actor: str,
        source: str = "",
        solution: str | None = None,
    ) -> None:
        """Apply a status action of ``broker.rules.ticket_states`` (``resolve`` needs a
        ``solution``); a change the table refuses raises :class:`TicketConflict`."""
        seen = await self.get(ticket_id)
        if seen is None:
            raise TicketNotFound(ticket_id)
        await self.apply_action(seen, action, actor=actor, source=source, solution=solution)

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
        """Add a note; a second call with the same idempotency key adds nothing."""
        await self.write_note(
            ticket_id,
            author=author,
            text_=text,
            internal=internal,
            attachments=attachments,
            idempotency_key=idempotency_key,
            now=now,
        )
