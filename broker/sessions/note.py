"""The internal note a session leaves on its ticket, as plain text (pure).

Everything in it that came from the agent or from typing (command lines) is made inert
(controls shown as ``\\xHH``) and length-capped; the ticket system shows it as text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from broker.rules import sanitize_display_text
from broker.transcript import END_KILLED, Command
from broker.transcript.render import visible_controls

MAX_COMMANDS: Final = 200
MAX_COMMAND_CHARS: Final = 300
# Ticket systems cap a note (the built-in store at 20,000 characters): the command list
# gives way first, the rest of the note is short and bounded.
NOTE_BUDGET: Final = 18_000
CAST_CONTENT_TYPE: Final = "application/x-asciicast"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"


@dataclass(frozen=True, kw_only=True)
class NoteFacts:
    """Everything the note states about one session."""

    session_id: str
    ticket_ref: str
    owner: str
    agent_name: str
    agent_id: str
    kind: str
    command: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime
    end_reason: str
    end_message: str
    exit_status: int | None
    exit_signal: str | None
    consent: str | None
    consent_by: str | None
    consent_at: dt.datetime | None
    participants: Sequence[tuple[str, str]]
    commands: Sequence[Command]
    digest: str | None
    complete: bool | None
    event_count: int | None
    attachments: Sequence[str]
    left_out: Sequence[str] = ()


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: float) -> str:
    """``H:MM:SS`` for a non-negative number of seconds."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _inert(text: str, limit: int) -> str:
    shown = visible_controls(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _status(exit_status: int | None, exit_signal: str | None) -> str:
    if exit_status is not None:
        return f"exit status {exit_status}"
    if exit_signal is not None:
        return f"signal {sanitize_display_text(exit_signal, 20)}"
    return "no exit status"


def _killer(message: str) -> str:
    return message.removeprefix("the session was ended by ")


def _consent(facts: NoteFacts) -> str:
    if facts.consent in (None, "not_required"):
        return "not required (unattended agent)"
    by = f" by {sanitize_display_text(facts.consent_by, 32)}" if facts.consent_by else ""
    return f"{facts.consent}{by} at {_when(facts.consent_at)}"


def _participants(people: Sequence[tuple[str, str]]) -> str:
    seen: list[str] = []
    for name, role in people:
        entry = f"{sanitize_display_text(name, 64)} ({role})"
        if entry not in seen:
            seen.append(entry)
    return ", ".join(seen) or "-"


def _command_line(command: Command) -> str:
    status = "exit ?" if command.exit_status is None else f"exit {command.exit_status}"
    took = "" if command.duration is None else f", {command.duration:.1f} s"
    return f"  [{status}{took}] {_inert(command.command_line, MAX_COMMAND_CHARS) or '(empty)'}"


def session_note(facts: NoteFacts) -> str:
    """The note's text."""
    lines = [
        f"Remote session {facts.session_id} on {sanitize_display_text(facts.agent_name, 63)} "
        f"({facts.agent_id}) by {sanitize_display_text(facts.owner, 64)}",
        "",
        f"Started:      {_when(facts.started_at)}",
        f"Ended:        {_when(facts.ended_at)}",
    ]
    if facts.started_at is not None:
        seconds = (facts.ended_at - facts.started_at).total_seconds()
        lines.append(f"Duration:     {duration_text(seconds)}")
    lines.append(
        f"End:          {sanitize_display_text(facts.end_reason, 120)} "
        f"({_status(facts.exit_status, facts.exit_signal)})"
    )
    if facts.end_reason == END_KILLED and facts.end_message:
        # Who ended it and why (`secondline session kill --reason`): the next reader asks.
        lines.append(f"Ended by:     {sanitize_display_text(_killer(facts.end_message), 300)}")
    lines += [
        f"Consent:      {_consent(facts)}",
        f"Participants: {_participants(facts.participants)}",
    ]
    if facts.kind == "exec" and facts.command is not None:
        lines.append(f"Command:      {_inert(facts.command, MAX_COMMAND_CHARS)}")
    tail = _tail(facts)
    budget = NOTE_BUDGET - sum(len(line) + 1 for line in lines + tail)
    lines += ["", "Commands run:"]
    if not facts.commands:
        lines.append("  (none recorded)")
    shown = 0
    for command in facts.commands[:MAX_COMMANDS]:
        line = _command_line(command)
        budget -= len(line) + 1
        if budget < 100:
            break
        lines.append(line)
        shown += 1
    if shown < len(facts.commands):
        lines.append(f"  ... and {len(facts.commands) - shown} more (see the transcript)")
    return "\n".join([*lines, "", *tail]) + "\n"


def _tail(facts: NoteFacts) -> list[str]:
    lines: list[str] = []
    if facts.digest is not None:
        state = "complete" if facts.complete else "cut short"
        lines.append(
            f"Transcript:   {facts.event_count} events, sealed {state}, "
            f"SHA-256 chain digest {facts.digest}"
        )
    else:
        lines.append("Transcript:   not sealed (tell an admin)")
    lines.append(f"Verify with:  secondline transcript verify {facts.session_id}")
    if facts.attachments:
        lines.append(f"Attached:     {', '.join(facts.attachments)}")
    for what in facts.left_out:
        lines.append(f"Not attached: {what}")
    return lines


def exec_commands(
    command: str | None, exit_status: int | None, duration: float
) -> tuple[Command, ...]:
    """The command list of a one-command session (no prompt marks come without a shell)."""
    if command is None:
        return ()
    return (Command(command, 0.0, round(max(0.0, duration), 6), exit_status),)
