"""What happens after a session ends: its row, its participants, its audit event and its
note in the outbox, written until the database takes them (a database that is down delays
the record, it never loses it: the row stays "live" and the next start recovers it).
Participants joining and leaving, and sessions refused after their row was written, are
retried the same way (:meth:`Finisher.until_stored`).

Also the start-up recovery of sessions a crashed broker left "live": their transcripts are
recovered and sealed as cut short ("interrupted"), and their notes queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from sqlalchemy.exc import SQLAlchemyError

from broker.db.models_sessions import RemoteSession
from broker.ports import TicketSystem
from broker.secret_scrubber import scrub_secrets
from broker.services import Services
from broker.sessions import store
from broker.sessions.facts import Outcome
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import Member
from broker.sessions.note import NoteFacts, exec_commands, session_note
from broker.sessions.note_language import NoteTranslations, customer_language
from broker.transcript import (
    END_INTERRUPTED,
    Command,
    Seal,
    TranscriptError,
    commands_from_cast,
    find_unsealed,
    recover,
    transcript_paths,
)
from broker.transcript.render import commands_to_dicts

log = logging.getLogger(__name__)

DB_ERRORS: Final = (SQLAlchemyError, OSError)
# A failed write is retried after 1, 2, 4, 8, then every 10 seconds: once the database is
# back, ended sessions are recorded (and their notes queued) within seconds, not half a
# minute later; one connection attempt per waiting record every 10 s costs nothing.
RETRY_CAP: Final = 10.0
RENDER_MAX: Final = 64 << 20


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


@dataclass(frozen=True)
class Attachments:
    """Which transcript files go with the note, decided when it is queued."""

    names: tuple[str, ...]
    left_out: tuple[str, ...]


def plan_attachments(cast: Path, session_id: str, max_bytes: int) -> Attachments:
    """The ``.cast`` and its text rendering, unless the ``.cast`` exceeds ``max_bytes``;
    past :data:`RENDER_MAX` not even the text is rendered (it would hold up the outbox)."""
    try:
        size = cast.stat().st_size
    except OSError:
        return Attachments((), (f"{session_id}.cast (the transcript file is missing)",))
    if size > RENDER_MAX:
        hint = f"secondline transcript export {session_id}"
        mib = size / (1 << 20)
        return Attachments(
            (),
            (f"{session_id}.cast and {session_id}.txt ({mib:.0f} MiB, too large; {hint})",),
        )
    if size > max_bytes:
        mib = size / (1 << 20)
        return Attachments(
            (f"{session_id}.txt",),
            (
                f"{session_id}.cast ({mib:.1f} MiB, over the attachment limit; "
                f"secondline transcript export {session_id})",
            ),
        )
    return Attachments((f"{session_id}.cast", f"{session_id}.txt"), ())


def with_final_status(commands: tuple[Command, ...], outcome: Outcome) -> tuple[Command, ...]:
    """A shell that exited by itself ended with its last command (``exit 3``, ``logout``):
    that command's status is the shell's. Killed or cut-off sessions keep "unknown"."""
    if not commands or outcome.code != "exit" or outcome.exit_status is None:
        return commands
    last = commands[-1]
    if last.exit_status is not None:
        return commands
    return (*commands[:-1], dataclasses.replace(last, exit_status=outcome.exit_status))


def scrubbed(commands: tuple[Command, ...]) -> tuple[Command, ...]:
    """The command list with secrets replaced: what the note, the session row (its command
    index in the console and API) and the drafts written from it show."""
    return tuple(
        dataclasses.replace(c, command_line=scrub_secrets(c.command_line)) for c in commands
    )


def _scrubbed_command(command: str | None) -> str | None:
    return None if command is None else scrub_secrets(command)


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
        self, live: LiveSession, outcome: Outcome, *, closing: Callable[[], bool]
    ) -> None:
        """Record the end; retries while the database is down (bounded while closing)."""
        # _write is safe to repeat: the row update and the participants' close are the
        # same again, the note is queued once, and the audit event comes last.
        written = await self.until_stored(
            live.session_id, "its end", lambda: self._write(live, outcome), closing
        )
        if not written:
            return  # still "live" in the database: the next start recovers it
        self._locks.pop(live.session_id, None)
        log.info("session %s ended: %s", live.session_id, outcome.reason)
        self.changed.set()
        self.wake()

    async def _write(self, live: LiveSession, outcome: Outcome) -> None:
        facts = live.facts
        sid = facts.session_id
        started = _utc(outcome.started_at)
        ended = _utc(outcome.ended_at)
        commands: tuple[Command, ...] = outcome.commands
        if facts.kind == "exec" and not commands:
            commands = exec_commands(
                facts.command, outcome.exit_status, outcome.ended_at - outcome.started_at
            )
        commands = scrubbed(with_final_status(commands, outcome))
        seal = outcome.seal
        note: str | None = None
        files = Attachments((), ())
        async with self._lock(sid):
            async with self.services.db() as db, db.begin():
                people = [(p.name, p.role) for p in await store.participants(db, sid)]
                if live.channel_opened and seal is not None:
                    cast = transcript_paths(self.services.config.transcripts_dir, sid).cast
                    files = plan_attachments(cast, sid, self.services.config.max_attachment_bytes)
                    consent = live.consent
                    language = await customer_language(db, facts.customer)
                    note = session_note(
                        NoteFacts(
                            session_id=sid,
                            ticket_ref=facts.ticket_ref,
                            owner=facts.owner,
                            agent_name=facts.agent_name,
                            agent_id=facts.agent_id,
                            kind=facts.kind,
                            command=_scrubbed_command(facts.command),
                            started_at=started,
                            ended_at=ended,
                            end_reason=outcome.reason,
                            end_message=outcome.message,
                            exit_status=outcome.exit_status,
                            exit_signal=outcome.exit_signal,
                            consent=consent.decision if consent else None,
                            consent_by=consent.by if consent else None,
                            consent_at=consent.at if consent else None,
                            participants=people or [(facts.owner, "owner")],
                            commands=commands,
                            digest=seal.final_hash,
                            complete=seal.complete,
                            event_count=seal.event_count,
                            attachments=files.names,
                            left_out=files.left_out,
                        ),
                        self._translations.gettext(language),
                    )
                await store.update_session(
                    db,
                    sid,
                    state="ended" if live.channel_opened else "failed",
                    started_at=started,
                    ended_at=ended,
                    end_reason=outcome.reason[:200],
                    ended_by=outcome.ended_by,
                    exit_status=outcome.exit_status,
                    exit_signal=(outcome.exit_signal or None) and outcome.exit_signal[:32],
                    transcript_digest=seal.final_hash if seal else None,
                    transcript_complete=seal.complete if seal else None,
                    transcript_events=seal.event_count if seal else None,
                    commands=commands_to_dicts(commands),
                )
                await store.close_participants(db, sid, now=ended, reason="session ended")
                if note is not None:
                    await store.enqueue_note(
                        db,
                        session_id=sid,
                        ticket_id=facts.ticket_id,
                        author=facts.owner,
                        text=note,
                        attachments=files.names,
                        now=self.services.clock(),
                    )
            await self.services.audit.record(
                actor=outcome.ended_by or facts.owner,
                action="session.end",
                target=sid,
                details={
                    "ticket": facts.ticket_ref,
                    "reason": outcome.reason,
                    "code": outcome.code,
                    "exit_status": outcome.exit_status,
                    "exit_signal": outcome.exit_signal,
                    "digest": seal.final_hash if seal else None,
                    "complete": seal.complete if seal else None,
                },
            )

    # -- start-up recovery -----------------------------------------------------------------

    async def recover_interrupted(self) -> int:
        """Seal and record the sessions a crash left live; returns how many."""
        async with self.services.db() as db:
            rows = list(await store.unfinished(db))
        root = self.services.config.transcripts_dir
        for row in rows:
            cast = transcript_paths(root, row.id).cast
            seal, commands = await asyncio.to_thread(self._recover_files, cast)
            await self._record_interrupted(row, seal, commands, cast)
        if root.is_dir():
            for orphan in await asyncio.to_thread(find_unsealed, root):
                await asyncio.to_thread(self._recover_files, orphan)
        if rows:
            self.wake()
        return len(rows)

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

    async def _record_interrupted(
        self, row: RemoteSession, seal: Seal | None, commands: tuple[Command, ...], cast: Path
    ) -> None:
        now = self.services.clock()
        sid = row.id
        commands = scrubbed(commands)
        note: str | None = None
        files = Attachments((), ())
        async with self.services.db() as db, db.begin():
            if seal is not None and row.state == "live":
                people = [(p.name, p.role) for p in await store.participants(db, sid)]
                files = plan_attachments(cast, sid, self.services.config.max_attachment_bytes)
                language = await customer_language(db, row.customer)
                note = session_note(
                    NoteFacts(
                        session_id=sid,
                        ticket_ref=f"T-{row.ticket_id}",
                        owner=row.owner,
                        agent_name=row.agent_name,
                        agent_id=row.agent_id,
                        kind=row.kind,
                        command=_scrubbed_command(row.command),
                        started_at=row.started_at,
                        ended_at=now,
                        end_reason=f"{END_INTERRUPTED} (the broker stopped)",
                        end_message="the broker stopped during the session",
                        exit_status=None,
                        exit_signal=None,
                        consent=row.consent,
                        consent_by=row.consent_by,
                        consent_at=row.consent_at,
                        participants=people or [(row.owner, "owner")],
                        commands=commands,
                        digest=seal.final_hash,
                        complete=seal.complete,
                        event_count=seal.event_count,
                        attachments=files.names,
                        left_out=files.left_out,
                    ),
                    self._translations.gettext(language),
                )
            await store.update_session(
                db,
                sid,
                state="interrupted",
                ended_at=now,
                end_reason=END_INTERRUPTED,
                transcript_digest=seal.final_hash if seal else None,
                transcript_complete=seal.complete if seal else None,
                transcript_events=seal.event_count if seal else None,
                commands=commands_to_dicts(commands),
            )
            await store.close_participants(db, sid, now=now, reason="broker stopped")
            if note is not None:
                await store.enqueue_note(
                    db,
                    session_id=sid,
                    ticket_id=row.ticket_id,
                    author=row.owner,
                    text=note,
                    attachments=files.names,
                    now=now,
                )
        await self.services.audit.record(
            actor="secondline",
            action="session.interrupted",
            target=sid,
            details={
                "ticket": f"T-{row.ticket_id}",
                "state_was": row.state,
                "digest": seal.final_hash if seal else None,
            },
        )
        log.warning("session %s was interrupted by a broker stop; its transcript is sealed", sid)
