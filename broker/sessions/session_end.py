"""What a session's end writes, decided before it is written: the row's columns, the
participants' leave, the note (with which transcript files go with it) and the audit
event. Built from a hub's outcome, from a row a crash left behind, or from a start that
was refused; written by :meth:`broker.sessions.finish.Finisher.write_end`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from broker.config import BrokerConfig
from broker.db.models_sessions import RemoteSession
from broker.secret_scrubber import scrub_secrets
from broker.sessions.facts import Outcome, SessionFacts
from broker.sessions.hub import LiveSession
from broker.sessions.lifecycle import END_NOT_STARTED, AuditEnd, WriteEnd
from broker.sessions.note import NoteFacts, exec_commands
from broker.transcript import END_INTERRUPTED, Command, Seal, TranscriptError, transcript_paths
from broker.transcript.export import files_from_cast
from broker.transcript.output import playable_size
from broker.transcript.render import commands_to_dicts

log = logging.getLogger(__name__)

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
    # What is attached is the asciicast v2 copy (playable_cast): a format 2 file that holds
    # output as bytes makes a larger one (zeros: 4/3 of a byte each in base64, six as text).
    if size > max_bytes or playable_size(cast, max_bytes) is None:
        what = f"{size / (1 << 20):.1f} MiB" if size > max_bytes else "as asciicast v2"
        return Attachments(
            (f"{session_id}.txt",),
            (
                f"{session_id}.cast ({what}, over the attachment limit; "
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


@dataclass(frozen=True)
class EndAudit:
    """The audit event of a session's end."""

    actor: str
    action: str
    details: dict[str, object]


# What a session is about, as its hub knew it or as a row a crash left tells it: both name
# the ticket, the customer, the owner and the agent the same way.
About = SessionFacts | RemoteSession


@dataclass(frozen=True)
class EndRecord:
    """Everything a session's end writes (:meth:`broker.sessions.finish.Finisher.write_end`),
    decided before it is written so that a retry writes the same again."""

    session_id: str
    about: About
    values: dict[str, object]  # the row's columns
    ended_at: dt.datetime
    participants_left: str | None  # close open participations with this reason
    note: NoteFacts | None  # its participants are read when it is written
    queued_at: dt.datetime | None  # None: when written
    audit: EndAudit | None


def _seal_values(seal: Seal | None, commands: tuple[Command, ...]) -> dict[str, object]:
    return {
        "transcript_digest": seal.final_hash if seal else None,
        "transcript_complete": seal.complete if seal else None,
        "transcript_events": seal.event_count if seal else None,
        "commands": commands_to_dicts(commands),
    }


@dataclass(frozen=True)
class _Told:
    """How the note tells the end: times, reason, the people's sentence, exit, consent."""

    started_at: dt.datetime | None
    ended_at: dt.datetime
    reason: str
    message: str
    exit_status: int | None = None
    exit_signal: str | None = None
    consent: tuple[str | None, str | None, dt.datetime | None] = (None, None, None)


def _note(
    sid: str,
    about: About,
    told: _Told,
    commands: tuple[Command, ...],
    seal: Seal,
    files: Attachments,
    cast: Path,
) -> NoteFacts:
    decision, by, at = told.consent
    return NoteFacts(
        session_id=sid,
        ticket_ref=f"T-{about.ticket_id}",
        owner=about.owner,
        agent_name=about.agent_name,
        agent_id=about.agent_id,
        kind=about.kind,
        command=_scrubbed_command(about.command),
        started_at=told.started_at,
        ended_at=told.ended_at,
        end_reason=told.reason,
        end_message=told.message,
        exit_status=told.exit_status,
        exit_signal=told.exit_signal,
        consent=decision,
        consent_by=by,
        consent_at=at,
        participants=(),
        commands=commands,
        digest=seal.final_hash,
        complete=seal.complete,
        event_count=seal.event_count,
        attachments=files.names,
        left_out=files.left_out,
        files=_files_moved(about.kind, cast),
    )


def _files_moved(kind: str, cast: Path) -> tuple[str, ...]:
    """The file operations an SFTP session recorded (its markers); a shell has none to
    read, and a transcript that cannot be read leaves the list out, not the note."""
    if kind != "sftp":
        return ()
    try:
        return files_from_cast(cast)
    except (TranscriptError, OSError) as exc:
        log.warning("cannot list the files moved from %s: %s", cast.name, exc)
        return ()


def end_of_hub(
    live: LiveSession,
    outcome: Outcome,
    write: WriteEnd,
    audit: AuditEnd | None,
    config: BrokerConfig,
) -> EndRecord:
    """The end of a session whose hub ran on this node."""
    facts = live.facts
    sid = facts.session_id
    started, ended = _utc(outcome.started_at), _utc(outcome.ended_at)
    commands: tuple[Command, ...] = outcome.commands
    if facts.kind == "exec" and not commands:
        commands = exec_commands(
            facts.command, outcome.exit_status, outcome.ended_at - outcome.started_at
        )
    commands = scrubbed(with_final_status(commands, outcome))
    seal = outcome.seal
    note: NoteFacts | None = None
    if write.note and seal is not None:
        cast = transcript_paths(config.transcripts_dir, sid).cast
        files = plan_attachments(cast, sid, config.max_attachment_bytes)
        consent = live.consent
        told = _Told(
            started,
            ended,
            outcome.reason,
            outcome.message,
            outcome.exit_status,
            outcome.exit_signal,
            (consent.decision, consent.by, consent.at) if consent else (None, None, None),
        )
        note = _note(sid, facts, told, commands, seal, files, cast)
    signal = outcome.exit_signal
    values: dict[str, object] = {
        "state": write.state,
        "started_at": started,
        "ended_at": ended,
        "end_reason": (write.reason or outcome.reason)[:200],
        "ended_by": outcome.ended_by,
        "exit_status": outcome.exit_status,
        "exit_signal": (signal or None) and signal[:32],
        **_seal_values(seal, commands),
    }
    details: dict[str, object] = {
        "ticket": facts.ticket_ref,
        "reason": outcome.reason,
        "code": outcome.code,
        "exit_status": outcome.exit_status,
        "exit_signal": signal,
        "digest": seal.final_hash if seal else None,
        "complete": seal.complete if seal else None,
    }
    actor = outcome.ended_by or facts.owner
    event = None if audit is None else EndAudit(actor, audit.action, details)
    return EndRecord(sid, facts, values, ended, "session ended", note, None, event)


def end_of_row(
    row: RemoteSession,
    seal: Seal | None,
    commands: tuple[Command, ...],
    cast: Path,
    write: WriteEnd,
    audit: AuditEnd | None,
    now: dt.datetime,
    max_bytes: int,
) -> EndRecord:
    """The end of a session a stopped broker left unended (recovered at the next start)."""
    sid = row.id
    commands = scrubbed(commands)
    note: NoteFacts | None = None
    if write.note and seal is not None:
        files = plan_attachments(cast, sid, max_bytes)
        reason = f"{END_INTERRUPTED} (the broker stopped)"
        message = "the broker stopped during the session"
        consent = (row.consent, row.consent_by, row.consent_at)
        told = _Told(row.started_at, now, reason, message, consent=consent)
        note = _note(sid, row, told, commands, seal, files, cast)
    values: dict[str, object] = {
        "state": write.state,
        "ended_at": now,
        "end_reason": write.reason or END_INTERRUPTED,
        **_seal_values(seal, commands),
    }
    details: dict[str, object] = {
        "ticket": f"T-{row.ticket_id}",
        "state_was": row.state,
        "digest": seal.final_hash if seal else None,
    }
    event = None if audit is None else EndAudit("secondline", audit.action, details)
    return EndRecord(sid, row, values, now, "broker stopped", note, now, event)


def end_of_start(facts: SessionFacts, write: WriteEnd, now: dt.datetime) -> EndRecord:
    """The end of a session refused, or broken off, before its hub existed: only its row
    (the refusal is audited where it was decided; nobody had joined yet)."""
    reason = write.reason or END_NOT_STARTED
    values: dict[str, object] = {"state": write.state, "end_reason": reason[:200], "ended_at": now}
    return EndRecord(facts.session_id, facts, values, now, None, None, None, None)
