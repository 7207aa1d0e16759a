"""What happens after a session ends: its row, its participants, its audit event and its
note in the outbox, written by one writer (:meth:`Finisher.write_end`, of a record built in
``broker.sessions.session_end``) until the database takes them (a database that is down
delays the record, it never loses it: the row stays "live" and the next start recovers it).
Participants joining and leaving, and sessions refused after their row was written, are
retried the same way (:meth:`Finisher.until_stored`).

Also the start-up recovery of sessions a crashed broker left "live": their transcripts are
recovered and sealed as cut short ("interrupted"), and their notes queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Literal

from broker.db.models_sessions import RemoteSession
from broker.ports import TicketSystem
from broker.services import Services
from broker.sessions import store
from broker.sessions.errors import DB_ERRORS
from broker.sessions.facts import Outcome, SessionFacts
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import Member
from broker.sessions.lifecycle import AuditEnd, Recovered, SessionLifecycle, WriteEnd
from broker.sessions.note import session_note
from broker.sessions.note_language import NoteTranslations, customer_language
from broker.sessions.session_end import (
    RENDER_MAX,
    Attachments,
    EndRecord,
    end_of_hub,
    end_of_row,
    end_of_start,
    plan_attachments,
)
from broker.tickets.outbox import enqueue_note
from broker.transcript import (
    Command,
    Seal,
    TranscriptError,
    commands_from_cast,
    find_unsealed,
    recover,
    transcript_paths,
)

log = logging.getLogger(__name__)

# A failed write is retried after 1, 2, 4, 8, then every 10 seconds: once the database is
# back, ended sessions are recorded (and their notes queued) within seconds, not half a
# minute later; one connection attempt per waiting record every 10 s costs nothing.
RETRY_CAP: Final = 10.0
# Who claims a recovery on a single node (it has no node name).
SINGLE_NODE: Final = "single"
# Still importable from here, where they were first written (the note tests do).
__all__ = ["RENDER_MAX", "Attachments", "Finisher", "plan_attachments"]


class Finisher:
    """Writes ended sessions to the database and the outbox."""

    def __init__(self, services: Services, tickets: Callable[[], TicketSystem | None]) -> None:
        self.services = services
        self._tickets = tickets
        self._locks: dict[str, asyncio.Lock] = {}
        self.wake: Callable[[], None] = lambda: None  # the outbox worker sets this
        self.changed = asyncio.Event()  # set after every session end is recorded
        self._translations = NoteTranslations()  # the note in the customer's language

    def _lock(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    async def member_changed(
        self,
        sid: str,
        member: Member,
        what: Literal["joined", "left"],
        why: str,
        *,
        closing: Callable[[], bool],
    ) -> None:
        """Write a participant change and audit it (kept in order per session); retries
        while the database is down, like the end (bounded while closing)."""
        now = self.services.clock()

        async def write_row() -> None:
            async with self.services.db() as db, db.begin():
                if what == "joined":
                    await store.add_participant(
                        db, sid, name=member.name, role=member.role, via=member.via, now=now
                    )
                else:
                    await store.participant_left(
                        db, sid, name=member.name, role=member.role, now=now, reason=why
                    )

        async def write_audit() -> None:
            await self.services.audit.record(
                actor=member.name,
                action=f"session.participant_{what}",
                target=sid,
                details={"role": member.role, "via": member.via, "reason": why[:100]},
                now=now,
            )

        # A change made while the database was down used to be logged and dropped: the
        # participant row kept no leave time and the audit log missed the event. The row
        # and the audit event are retried apart, so a row written before a failed audit
        # is not added twice.
        change = f"{member.name} {what}"
        async with self._lock(sid):
            if await self.until_stored(sid, change, write_row, closing):
                await self.until_stored(sid, f"the audit of {change}", write_audit, closing)

    async def until_stored(
        self,
        sid: str,
        what: str,
        write: Callable[[], Awaitable[None]],
        closing: Callable[[], bool],
    ) -> bool:
        """Run ``write`` until the database takes it; False when given up while closing
        (what is left is recovered at the next start)."""
        attempt = 0
        while True:
            try:
                await write()
            except DB_ERRORS as exc:
                attempt += 1
                log.error(
                    "session %s: recording %s failed (%s), attempt %d",
                    sid,
                    what,
                    type(exc).__name__,
                    attempt,
                )
                if closing() and attempt >= 3:
                    return False
                await asyncio.sleep(min(RETRY_CAP, 0.5 * 2**attempt))
                continue
            if attempt:
                log.info("session %s: recorded %s after %d failed attempts", sid, what, attempt)
            return True

    async def finish(
        self,
        live: LiveSession,
        outcome: Outcome,
        write: WriteEnd,
        audit: AuditEnd | None,
        *,
        closing: Callable[[], bool],
    ) -> None:
        """Record the end; retries while the database is down (bounded while closing)."""
        record = end_of_hub(live, outcome, write, audit, self.services.config)
        if outcome.seal is not None and self.services.transcripts.shared:
            # The sealed transcript is where every node reads it before the end is written:
            # a session recorded "ended" is one whose transcript any node can play.
            sid = live.session_id

            async def ship() -> None:
                await self.services.transcripts.ship(sid)

            if not await self.until_stored(sid, "its transcript", ship, closing):
                return  # still "live" in the database: the next start recovers it
            if await self._taken_over(sid):
                return
        # Safe to repeat: the row update and the participants' close are the same again,
        # the note is queued once, and the audit event comes last.
        written = await self.until_stored(
            live.session_id, "its end", lambda: self.write_end(record), closing
        )
        if not written:
            return  # still "live" in the database: the next start recovers it
        self._locks.pop(live.session_id, None)
        log.info("session %s ended: %s", live.session_id, outcome.reason)
        self.changed.set()
        self.wake()

    async def _taken_over(self, sid: str) -> bool:
        """Whether another node sealed this session as interrupted while it still ran here
        (this node was cut off from the cluster for longer than its lease): its end and
        seal stand, and this node's longer recording stays in its data dir only."""
        me = self.services.config.node or SINGLE_NODE
        try:
            async with self.services.db() as db:
                holder = await store.recovered_by(db, sid)
        except DB_ERRORS:
            return False  # the end's write retries, and the row's state decides then
        if holder is None or holder == me:
            return False
        log.error(
            "session %s was sealed as interrupted by node %s while it ran here (this node "
            "was cut off from the cluster); its full recording stays in this node's data dir",
            sid,
            holder,
        )
        return True

    async def finish_unstarted(
        self, facts: SessionFacts, write: WriteEnd, *, closing: Callable[[], bool]
    ) -> None:
        """Record the end of a session refused or broken off before it ran (only its row;
        retried like every end: a row left "starting" or "waiting_consent" would count
        against the owner's limit until a restart)."""
        record = end_of_start(facts, write, self.services.clock())
        sid = facts.session_id
        if await self.until_stored(sid, "its refusal", lambda: self.write_end(record), closing):
            self._locks.pop(sid, None)

    async def write_end(self, record: EndRecord) -> None:
        """The one writer of a session's end: its row, its participants' leave and its note
        in one transaction, then its audit event. For sessions that ended here, refused
        ones, and those a crash left behind."""
        sid = record.session_id
        async with self._lock(sid):
            async with self.services.db() as db, db.begin():
                note: str | None = None
                if record.note is not None:
                    people = [(p.name, p.role) for p in await store.participants(db, sid)]
                    language = await customer_language(db, record.about.customer)
                    note = session_note(
                        dataclasses.replace(
                            record.note, participants=people or [(record.note.owner, "owner")]
                        ),
                        self._translations.gettext(language),
                    )
                await store.update_session(db, sid, only_from=(), **record.values)
                if record.participants_left is not None:
                    await store.close_participants(
                        db, sid, now=record.ended_at, reason=record.participants_left
                    )
                if record.note is not None and note is not None:
                    await enqueue_note(
                        db,
                        session_id=sid,
                        ticket_id=record.about.ticket_id,
                        author=record.note.owner,
                        text=note,
                        attachments=record.note.attachments,
                        now=record.queued_at or self.services.clock(),
                    )
            if record.audit is not None:
                await self.services.audit.record(
                    actor=record.audit.actor,
                    action=record.audit.action,
                    target=sid,
                    details=record.audit.details,
                )

    # -- start-up recovery -----------------------------------------------------------------

    async def recover_interrupted(self) -> int:
        """Seal and record the sessions a crash left live; returns how many."""
        config = self.services.config
        mine = config.node or None
        async with self.services.db() as db:
            rows = list(await store.unfinished(db, node=mine))
        count = 0
        for row in rows:
            count += await self._recover_row(row, gone=None)
        root = config.transcripts_dir
        # Unsealed files no session row names (a crash before the row was written). With a
        # shared store they are left alone: a session whose spool is here but whose row
        # another node took over was sealed from the database's copy, and a second seal of
        # the spool would be a second, different transcript of it.
        if not self.services.transcripts.shared and root.is_dir():
            for orphan in await asyncio.to_thread(find_unsealed, root):
                await asyncio.to_thread(self._recover_files, orphan)
        if count:
            self.wake()
        return count

    async def recover_node(self, gone: str) -> int:
        """Seal and record the sessions of node ``gone``, whose presence lease ran out (it
        died): every surviving node calls this, and exactly one seals each session (the
        claim). Returns how many this node sealed."""
        async with self.services.db() as db:
            rows = list(await store.unfinished(db, node=gone))
        count = 0
        for row in rows:
            count += await self._recover_row(row, gone=gone)
        if count:
            log.warning("sealed %d sessions of node %s, which stopped answering", count, gone)
            self.changed.set()
            self.wake()
        return count

    async def _recover_row(self, row: RemoteSession, *, gone: str | None) -> int:
        """Claim one interrupted session, seal its transcript (from this node's files or
        the shared store's copy), store the seal where every node reads it, and record its
        end; 0 when another node holds the claim."""
        me = self.services.config.node or SINGLE_NODE
        async with self.services.db() as db, db.begin():
            if not await store.claim_recovery(db, row.id, by=me, gone=gone):
                return 0
        transcripts = self.services.transcripts
        async with transcripts.recovering(row.id) as root:
            cast = transcript_paths(root, row.id).cast
            seal, commands = await asyncio.to_thread(self._recover_files, cast)
            if seal is not None:
                await transcripts.ship(row.id, root)
            lifecycle = SessionLifecycle.restored(row.state)
            actions = lifecycle.feed(Recovered(sealed=seal is not None))
            write = next(a for a in actions if isinstance(a, WriteEnd))
            audit = next((a for a in actions if isinstance(a, AuditEnd)), None)
            now = self.services.clock()
            max_bytes = self.services.config.max_attachment_bytes
            await self.write_end(
                end_of_row(row, seal, commands, cast, write, audit, now, max_bytes)
            )
        self._locks.pop(row.id, None)
        if gone is None:
            log.warning(
                "session %s was interrupted by a broker stop; its transcript is sealed", row.id
            )
        else:
            log.warning(
                "session %s of node %s was interrupted (the node stopped answering); its "
                "transcript is sealed",
                row.id,
                gone,
            )
        return 1

    def _recover_files(self, cast: Path) -> tuple[Seal | None, tuple[Command, ...]]:
        if not cast.exists():
            return None, ()
        try:
            seal = recover(cast, self.services.keys.transcript_key, time.time())
        except TranscriptError as exc:
            log.error("cannot recover the transcript %s: %s", cast.name, exc)
            return None, ()
        try:
            commands = commands_from_cast(cast)
        except TranscriptError:
            commands = ()
        return seal, commands
