"""Notes and attachments of tickets.

A note may carry attachments (the session write-back attaches its transcripts); a file may
also be attached on its own. Files are staged first, checked against the size limit, and
given their names inside the transaction that records them, so a refused, duplicate or
failed write leaves neither a row nor a file behind. A note sent again with the same
idempotency key is not added again (the unique constraint decides a race).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.audit.log import AuditLog
from broker.db.models_tickets import TicketAttachment, TicketNote
from broker.ports import NoteAttachment, TicketInfo
from broker.rules import format_ticket_id
from broker.tickets import queries, text
from broker.tickets.errors import TicketConflict, TicketInputError, TicketNotFound
from broker.tickets.files import AttachmentFiles, StagedFile, too_large
from broker.tickets.guard import WORK_GUARDS, guarded_update, touch
from broker.tickets.records import AttachmentRecord, NoteRecord

log = logging.getLogger(__name__)

_NAME_ATTEMPTS: Final = 100


class _DuplicateNote(Exception):
    """A note with the same idempotency key exists already."""


class NoteBook:
    """Writes and reads notes and attachments; part of :class:`TicketStore`."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        files: AttachmentFiles,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._db = db
        self._audit = audit
        self.files = files
        self._clock = clock

    async def _exists(self, ticket_id: int) -> bool:
        async with self._db() as db:
            return await queries.ticket_row(db, ticket_id) is not None

    async def attachment(self, ticket_id: int, name: str) -> tuple[AttachmentRecord, bytes] | None:
        """The attachment and its bytes, or None when there is no such attachment."""
        try:
            stored = text.attachment_name(name)
        except TicketInputError:
            return None
        if stored != name:
            return None
        async with self._db() as db:
            row = await queries.attachment_row(db, ticket_id, name)
        if row is None:
            return None
        data = await self.files.read(ticket_id, name)
        if data is None:
            log.error("attachment file missing: ticket=%s name=%s", ticket_id, name)
            return None
        return queries.attachment_record(row), data

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
        """Add a note; None when a note with ``idempotency_key`` exists already.

        With ``seen`` (staff writing through the API) the ticket must still be in the
        status and level that were judged; without it (write-back from sessions) a note is
        added in any status, so a session that ends after the ticket was resolved still
        reports. Attachments are checked before anything is written.
        """
        body = text.clean_text(text_, "note", text.NOTE_MAX, required=True)
        key = text.idempotency_key(idempotency_key)
        names = [text.attachment_name(a.name) for a in attachments]
        for item in attachments:
            if len(item.data) > self.files.max_bytes:
                raise too_large(self.files.max_bytes)
        at = now or self._clock()
        if seen is None and not await self._exists(ticket_id):
            raise TicketNotFound(ticket_id)
        if key is not None and await self._has_note(ticket_id, key):
            return None
        staged: list[tuple[StagedFile, str, str]] = []
        placed: list[Path] = []
        try:
            for item, name in zip(attachments, names, strict=True):
                staged.append(
                    (
                        await self.files.stage_bytes(ticket_id, item.data),
                        name,
                        text.content_type(item.content_type),
                    )
                )
            async with self._db() as db, db.begin():
                if seen is not None:
                    await guarded_update(db, seen, {}, self._clock(), WORK_GUARDS)
                else:
                    await touch(db, ticket_id, self._clock())
                note = TicketNote(
                    ticket_id=ticket_id,
                    author=author,
                    text=body,
                    internal=internal,
                    idempotency_key=key,
                    created_at=at,
                )
                db.add(note)
                try:
                    await db.flush()
                except IntegrityError as exc:
                    raise _DuplicateNote from exc
                stored = [
                    await self._store_file(db, ticket_id, s, name, ctype, author, note.id, placed)
                    for s, name, ctype in staged
                ]
        except _DuplicateNote as duplicate:
            await self.files.discard(*(s.path for s, _, _ in staged), *placed)
            # Only a note already stored under this key is a duplicate: any other refusal
            # of the insert (a constraint, a trigger) must reach the caller, or the outbox
            # would take a note that was never written for delivered.
            if key is not None and await self._has_note(ticket_id, key):
                return None
            raise duplicate.__cause__ or duplicate from None
        except BaseException:
            await self.files.discard(*(s.path for s, _, _ in staged), *placed)
            raise
        ref = format_ticket_id(ticket_id)
        await self._audit.record(
            actor=author,
            action="ticket.note",
            target=ref,
            source=source,
            details={"internal": internal, "attachments": stored, "idempotency_key": key},
        )
        return NoteRecord(
            id=note.id,
            author=author,
            text=body,
            internal=internal,
            created_at=at,
            attachments=tuple(stored),
        )

    async def _has_note(self, ticket_id: int, key: str) -> bool:
        async with self._db() as db:
            found = await db.scalar(
                select(TicketNote.id).where(
                    TicketNote.ticket_id == ticket_id, TicketNote.idempotency_key == key
                )
            )
        return found is not None

    async def _store_file(
        self,
        db: AsyncSession,
        ticket_id: int,
        staged: StagedFile,
        wanted: str,
        ctype: str,
        actor: str,
        note_id: int | None,
        placed: list[Path],
    ) -> str:
        """Record a staged file under the first free name (``x.txt``, ``x-2.txt``, ...)."""
        taken = set(
            (
                await db.execute(
                    select(TicketAttachment.name).where(TicketAttachment.ticket_id == ticket_id)
                )
            )
            .scalars()
            .all()
        )
        name = wanted
        number = 1
        while name in taken:
            number += 1
            if number > _NAME_ATTEMPTS:
                raise TicketConflict(
                    f"ticket {format_ticket_id(ticket_id)} has too many attachments named like "
                    f"{wanted!r}; choose another name",
                    code="attachment_name_taken",
                )
            name = text.numbered_name(wanted, number)
        db.add(
            TicketAttachment(
                ticket_id=ticket_id,
                note_id=note_id,
                name=name,
                content_type=ctype,
                size=staged.size,
                sha256=staged.sha256,
                created_by=actor,
                created_at=self._clock(),
            )
        )
        try:
            await db.flush()
        except IntegrityError:
            raise TicketConflict(
                f"another attachment named {name!r} arrived at the same moment; try again",
                code="attachment_name_taken",
            ) from None
        placed.append(await self.files.place(staged, ticket_id, name))
        return name

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
        wanted = text.attachment_name(name)
        ctype = text.content_type(content_type)
        staged = await self.files.stage_stream(seen.id, chunks)
        placed: list[Path] = []
        try:
            async with self._db() as db, db.begin():
                await guarded_update(db, seen, {}, self._clock(), WORK_GUARDS)
                stored = await self._store_file(
                    db, seen.id, staged, wanted, ctype, actor, None, placed
                )
                row = await queries.attachment_row(db, seen.id, stored)
                assert row is not None
                record = queries.attachment_record(row)
        except BaseException:
            await self.files.discard(staged.path, *placed)
            raise
        await self._audit.record(
            actor=actor,
            action="ticket.attach",
            target=seen.ref,
            source=source,
            details={"name": record.name, "size": record.size, "sha256": record.sha256},
        )
        return record
